//! Adapters between the native stage traits and the ABI objects.
//!
//! - *Export* (plugin side): a native stage wrapped as a `#[sabi_trait]` object (a relevance
//!   method's `bind` receives the host's model as a shared [`ModelExport::Shared`] and returns
//!   its explainer the same way). Every method
//!   runs under [`catch_panic`], so a panic becomes an error for that call, never an abort.
//! - *Import* (host side): an ABI object wrapped as a native stage. Data from a plugin is
//!   checked (tensor and image sizes) before it is trusted.

use crate::error::{catch_panic, Error, Result};
use crate::graph::Graph;
use crate::stage::*;
use crate::tensor::{Image, Tensor};
use abi_stable::pointer_trait::AsPtr;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RVec};
use sr_abi::*;
use std::sync::Arc;

pub(crate) fn to_r<T, U>(r: Result<T>, f: impl FnOnce(T) -> U) -> RResult<U, FfiError> {
    match r {
        Ok(v) => RResult::ROk(f(v)),
        Err(e) => RResult::RErr(e.into()),
    }
}

fn from_r<T>(r: RResult<T, FfiError>) -> Result<T> {
    r.into_result().map_err(Error::from)
}

// ---- plain data ----------------------------------------------------------------------------

pub fn model_info_to_ffi(i: &ModelInfo) -> FfiModelInfo {
    FfiModelInfo {
        name: i.name.as_str().into(),
        input_shape: i.input_shape.iter().map(|&d| d as u64).collect(),
        mean: i.mean.iter().copied().collect(),
        std: i.std.iter().copied().collect(),
        resize: i.resize as u32,
        labels: i.labels.iter().map(|s| s.as_str().into()).collect(),
    }
}

pub fn model_info_from_ffi(i: &FfiModelInfo) -> ModelInfo {
    ModelInfo {
        name: i.name.to_string(),
        input_shape: i.input_shape.iter().map(|&d| d as usize).collect(),
        mean: i.mean.to_vec(),
        std: i.std.to_vec(),
        resize: i.resize as usize,
        labels: i.labels.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn explanation_to_ffi(e: &Explanation) -> FfiExplanation {
    FfiExplanation {
        relevance: e.relevance.to_ffi(),
        stats: e
            .stats
            .iter()
            .map(|s| FfiRelevanceStats {
                target: s.target as u32,
                relevance_sum: s.relevance_sum,
                target_score: s.target_score,
            })
            .collect(),
    }
}

pub fn explanation_from_ffi(e: &FfiExplanation) -> Result<Explanation> {
    Ok(Explanation {
        relevance: Tensor::from_ffi(&e.relevance)?,
        stats: e
            .stats
            .iter()
            .map(|s| RelevanceStats {
                target: s.target as usize,
                relevance_sum: s.relevance_sum,
                target_score: s.target_score,
            })
            .collect(),
    })
}

pub fn render_input_to_ffi(r: &RenderInput) -> FfiRenderInput {
    FfiRenderInput {
        image_name: r.image_name.as_str().into(),
        photo: r.photo.to_ffi(),
        model_input: r.model_input.as_ref().map(Image::to_ffi).into(),
        label: r.label.as_str().into(),
        branches: r
            .branches
            .iter()
            .map(|b| FfiBranchMaps {
                branch: b.branch.as_str().into(),
                relevance: b.relevance.to_ffi(),
                sr: b.sr.as_ref().map(Image::to_ffi).into(),
            })
            .collect(),
        photo_saliency: r.photo_saliency.as_ref().map(Image::to_ffi).into(),
        truth: r
            .truth
            .as_deref()
            .map(abi_stable::std_types::RString::from)
            .into(),
    }
}

pub fn render_input_from_ffi(r: &FfiRenderInput) -> Result<RenderInput> {
    let opt = |i: Option<&FfiImage>| i.map(Image::from_ffi).transpose();
    Ok(RenderInput {
        image_name: r.image_name.to_string(),
        photo: Image::from_ffi(&r.photo)?,
        model_input: opt(r.model_input.as_ref().into_option())?,
        label: r.label.to_string(),
        branches: r
            .branches
            .iter()
            .map(|b| {
                Ok(BranchMaps {
                    branch: b.branch.to_string(),
                    relevance: Tensor::from_ffi(&b.relevance)?,
                    sr: opt(b.sr.as_ref().into_option())?,
                })
            })
            .collect::<Result<_>>()?,
        photo_saliency: opt(r.photo_saliency.as_ref().into_option())?,
        truth: r.truth.as_ref().map(|t| t.to_string()).into_option(),
    })
}

pub fn stage_info_to_ffi(i: &StageInfo) -> FfiStageInfo {
    FfiStageInfo {
        kind: FfiStageKind::new(i.kind),
        name: i.name.as_str().into(),
        version: i.version.as_str().into(),
        description: i.description.as_str().into(),
        params: i
            .params
            .iter()
            .map(|p| FfiParamInfo {
                key: p.key.as_str().into(),
                default_toml: p.default_toml.clone().unwrap_or_default().into(),
                doc: p.doc.as_str().into(),
            })
            .collect(),
    }
}

/// `None` when the plugin declares a stage kind this host does not know.
pub fn stage_info_from_ffi(i: &FfiStageInfo) -> Option<StageInfo> {
    Some(StageInfo {
        kind: *i.kind.as_enum().ok()?,
        name: i.name.to_string(),
        version: i.version.to_string(),
        description: i.description.to_string(),
        params: i
            .params
            .iter()
            .map(|p| ParamInfo {
                key: p.key.to_string(),
                default_toml: Some(p.default_toml.to_string()).filter(|s| !s.is_empty()),
                doc: p.doc.to_string(),
            })
            .collect(),
    })
}

// ---- export: native -> ABI ------------------------------------------------------------------

/// A native model as an ABI object: owned (a plugin's backend) or shared (the host's model,
/// lent to a relevance method that binds to it: the method keeps a reference count).
pub enum ModelExport {
    Owned {
        stage: String,
        model: Box<dyn Model>,
    },
    Shared {
        stage: String,
        model: Arc<dyn Model>,
    },
}

impl ModelExport {
    fn parts(&self) -> (&str, &dyn Model) {
        match self {
            ModelExport::Owned { stage, model } => (stage, model.as_ref()),
            ModelExport::Shared { stage, model } => (stage, model.as_ref()),
        }
    }
}

impl FfiModel for ModelExport {
    fn info(&self) -> RResult<FfiModelInfo, FfiError> {
        let (stage, m) = self.parts();
        to_r(catch_panic(stage, || Ok(m.info())), |i| {
            model_info_to_ffi(&i)
        })
    }
    fn graph(&self) -> RResult<FfiGraph, FfiError> {
        let (stage, m) = self.parts();
        to_r(catch_panic(stage, || m.graph()?.to_ffi()), |g| g)
    }
    fn forward(&self, input: &FfiTensor) -> RResult<FfiTensor, FfiError> {
        let (stage, m) = self.parts();
        to_r(
            catch_panic(stage, || m.forward(&Tensor::from_ffi(input)?)),
            |t| t.to_ffi(),
        )
    }
    fn trace(&self, input: &FfiTensor) -> RResult<RVec<FfiTensor>, FfiError> {
        let (stage, m) = self.parts();
        to_r(
            catch_panic(stage, || m.trace(&Tensor::from_ffi(input)?)),
            |v| v.iter().map(Tensor::to_ffi).collect(),
        )
    }
}

pub struct RelevanceExport {
    pub stage: String,
    pub inner: Box<dyn Relevance>,
}

impl FfiRelevance for RelevanceExport {
    fn bind(&self, model: FfiModelBox) -> RResult<FfiExplainerBox, FfiError> {
        let r = catch_panic(&self.stage, || {
            let model: Arc<dyn Model> = Arc::new(ModelImport(model));
            self.inner.bind(model)
        });
        to_r(r, |inner| {
            FfiExplainer_TO::from_value(
                ExplainerExport {
                    stage: self.stage.clone(),
                    inner,
                },
                TD_Opaque,
            )
        })
    }
}

/// A native explainer as an ABI object.
pub struct ExplainerExport {
    pub stage: String,
    pub inner: Box<dyn Explainer>,
}

impl FfiExplainer for ExplainerExport {
    fn explain(&self, request: &FfiRequest) -> RResult<FfiExplanation, FfiError> {
        let r = catch_panic(&self.stage, || {
            let input = Tensor::from_ffi(&request.input)?;
            let logits = request
                .logits
                .as_ref()
                .into_option()
                .map(Tensor::from_ffi)
                .transpose()?;
            let targets: Vec<usize> = request.targets.iter().map(|&t| t as usize).collect();
            let images: Vec<ImageId> = request
                .images
                .iter()
                .map(|i| ImageId {
                    path: i.path.to_string(),
                    root: i.root.to_string(),
                })
                .collect();
            self.inner.explain(&Request {
                input: &input,
                targets: &targets,
                logits: logits.as_ref(),
                images: &images,
            })
        });
        to_r(r, |e| explanation_to_ffi(&e))
    }
}

pub struct SaliencyExport {
    pub stage: String,
    pub inner: Box<dyn Saliency>,
}

impl FfiSaliency for SaliencyExport {
    fn saliency(&self, input: &FfiImage) -> RResult<FfiImage, FfiError> {
        to_r(
            catch_panic(&self.stage, || {
                self.inner.saliency(&Image::from_ffi(input)?)
            }),
            |i| i.to_ffi(),
        )
    }
}

pub struct RendererExport {
    pub stage: String,
    pub inner: Box<dyn Renderer>,
}

impl FfiRenderer for RendererExport {
    fn render(&self, input: &FfiRenderInput) -> RResult<RVec<FfiArtifact>, FfiError> {
        let r = catch_panic(&self.stage, || {
            self.inner.render(&render_input_from_ffi(input)?)
        });
        to_r(r, |v| {
            v.into_iter()
                .map(|a| FfiArtifact {
                    name: a.name.into(),
                    bytes: a.bytes.into(),
                })
                .collect()
        })
    }
}

pub fn export_model(stage: String, model: Box<dyn Model>) -> FfiModelBox {
    FfiModel_TO::from_value(ModelExport::Owned { stage, model }, TD_Opaque)
}
pub fn export_relevance(stage: String, inner: Box<dyn Relevance>) -> FfiRelevanceBox {
    FfiRelevance_TO::from_value(RelevanceExport { stage, inner }, TD_Opaque)
}
pub fn export_saliency(stage: String, inner: Box<dyn Saliency>) -> FfiSaliencyBox {
    FfiSaliency_TO::from_value(SaliencyExport { stage, inner }, TD_Opaque)
}
pub fn export_renderer(stage: String, inner: Box<dyn Renderer>) -> FfiRendererBox {
    FfiRenderer_TO::from_value(RendererExport { stage, inner }, TD_Opaque)
}

// ---- import: ABI -> native ------------------------------------------------------------------

/// An ABI model (owned box or borrowed reference) used as a native [`Model`].
pub struct ModelImport<'lt, P: abi_stable::pointer_trait::GetPointerKind>(pub FfiModel_TO<'lt, P>);

impl<'lt, P> Model for ModelImport<'lt, P>
where
    P: AsPtr<PtrTarget = ()> + abi_stable::pointer_trait::GetPointerKind,
    FfiModel_TO<'lt, P>: Send + Sync,
{
    fn info(&self) -> ModelInfo {
        match self.0.info() {
            RResult::ROk(i) => model_info_from_ffi(&i),
            // `info` is infallible natively; a failing plugin gets an empty contract, which
            // the host rejects when it validates the input shape.
            RResult::RErr(_) => ModelInfo {
                name: String::new(),
                input_shape: vec![],
                mean: vec![],
                std: vec![],
                resize: 0,
                labels: vec![],
            },
        }
    }
    fn graph(&self) -> Result<Graph> {
        Graph::from_ffi(&from_r(self.0.graph())?)
    }
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Tensor::from_ffi(&from_r(self.0.forward(&input.to_ffi()))?)
    }
    fn trace(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        from_r(self.0.trace(&input.to_ffi()))?
            .iter()
            .map(Tensor::from_ffi)
            .collect()
    }
}

pub struct RelevanceImport(pub FfiRelevanceBox);

impl Relevance for RelevanceImport {
    fn bind(&self, model: Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        let lent = FfiModel_TO::from_value(
            ModelExport::Shared {
                stage: "model".into(),
                model,
            },
            TD_Opaque,
        );
        Ok(Box::new(ExplainerImport(from_r(self.0.bind(lent))?)))
    }
}

/// A plugin's explainer used as a native [`Explainer`].
pub struct ExplainerImport(pub FfiExplainerBox);

impl Explainer for ExplainerImport {
    fn explain(&self, request: &Request<'_>) -> Result<Explanation> {
        let r = FfiRequest {
            input: request.input.to_ffi(),
            targets: request.targets.iter().map(|&t| t as u32).collect(),
            logits: request.logits.map(Tensor::to_ffi).into(),
            images: request
                .images
                .iter()
                .map(|i| FfiImageId {
                    path: i.path.as_str().into(),
                    root: i.root.as_str().into(),
                })
                .collect(),
        };
        explanation_from_ffi(&from_r(self.0.explain(&r))?)
    }
}

pub struct SaliencyImport(pub FfiSaliencyBox);

impl Saliency for SaliencyImport {
    fn saliency(&self, input: &Image) -> Result<Image> {
        Image::from_ffi(&from_r(self.0.saliency(&input.to_ffi()))?)
    }
}

pub struct RendererImport(pub FfiRendererBox);

impl Renderer for RendererImport {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>> {
        let out = from_r(self.0.render(&render_input_to_ffi(input)))?;
        Ok(out
            .into_iter()
            .map(|a| Artifact {
                name: a.name.into_string(),
                bytes: a.bytes.into_vec(),
            })
            .collect())
    }
}
