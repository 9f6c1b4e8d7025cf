//! The native stage traits, their typed parameters, and the definition a plugin registers.
//!
//! A stage is written once against these traits. `export_plugin!` registers it as a built-in
//! (through `inventory`) and, with the plugin's `dynamic` feature, exports it from a `.so`
//! through the stable ABI. The host sees both kinds through the same [`crate::Registry`].

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::{Image, Tensor};
use serde::{de::DeserializeOwned, Serialize};
pub use sr_abi::StageKind;

/// A model's input contract.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    /// `[C, H, W]`.
    pub input_shape: Vec<usize>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Shorter side after resizing, before the centre crop (0: resize straight to `H x W`).
    pub resize: usize,
    pub labels: Vec<String>,
}

/// A loaded model (made by a model backend stage).
pub trait Model: Send + Sync {
    fn info(&self) -> ModelInfo;
    fn graph(&self) -> Result<Graph>;
    /// `N x C x H x W` normalised input to `N x classes` logits.
    fn forward(&self, input: &Tensor) -> Result<Tensor>;
    /// Every node's output, in graph order.
    fn trace(&self, input: &Tensor) -> Result<Vec<Tensor>>;
}

/// Per-sample statistics of an explanation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelevanceStats {
    pub target: usize,
    pub relevance_sum: f64,
    pub target_score: f64,
}

/// What a relevance method returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// `N x C x H x W`, in model-input space.
    pub relevance: Tensor,
    pub stats: Vec<RelevanceStats>,
}

/// The image a request is about: its path, and the folder it was found under (a method that
/// reads something per image, such as `relevance.file`, finds it by them). Empty strings when
/// the input is a bare tensor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageId {
    pub path: String,
    pub root: String,
}

/// What an [`Explainer`] is asked for one batch.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `N x C x H x W`, normalised as the model declares.
    pub input: &'a Tensor,
    /// The class to explain, one per sample.
    pub targets: &'a [usize],
    /// The model's `N x classes` logits for `input`, when the caller has them (a method may use
    /// them instead of running the model again).
    pub logits: Option<&'a Tensor>,
    /// The images the samples come from, one per sample, or empty when unknown.
    pub images: &'a [ImageId],
}

impl<'a> Request<'a> {
    /// A request for `targets` on a bare tensor: no logits, no image identities.
    pub fn new(input: &'a Tensor, targets: &'a [usize]) -> Self {
        Request {
            input,
            targets,
            logits: None,
            images: &[],
        }
    }
}

/// A relevance method: its parameters, parsed once. [`Relevance::bind`] prepares it for one
/// model (a canonized graph, converted weights, a fusion plan) and returns the [`Explainer`]
/// that every image of that model then goes through.
pub trait Relevance: Send + Sync {
    fn bind(&self, model: std::sync::Arc<dyn Model>) -> Result<Box<dyn Explainer>>;
}

/// A relevance method bound to one model.
pub trait Explainer: Send + Sync {
    fn explain(&self, request: &Request<'_>) -> Result<Explanation>;
}

/// A saliency method: `H x W x C` in [0, 1] to `H x W x 1` in [0, 1].
pub trait Saliency: Send + Sync {
    fn saliency(&self, input: &Image) -> Result<Image>;
}

/// One relevance branch of an image, as given to renderers.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchMaps {
    pub branch: String,
    pub relevance: Tensor,
    pub sr: Option<Image>,
}

/// Everything a renderer may draw for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderInput {
    pub image_name: String,
    pub photo: Image,
    pub model_input: Option<Image>,
    pub label: String,
    pub branches: Vec<BranchMaps>,
    pub photo_saliency: Option<Image>,
    /// The ground-truth label, when the run's `labels.csv` gives one.
    pub truth: Option<String>,
}

/// A file a renderer produced, relative to the image's output folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A renderer.
pub trait Renderer: Send + Sync {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>>;
}

/// A stage's typed parameters: one TOML table, unknown keys rejected.
///
/// Implement it on a `#[derive(Serialize, Deserialize, Default)]` struct with
/// `#[serde(default, deny_unknown_fields)]`; `DOCS` lists every key with a one-line
/// description, in the order `srhost plugins` and `docs/pipeline.md` show them.
pub trait Params: DeserializeOwned + Serialize + Default {
    const DOCS: &'static [(&'static str, &'static str)];
}

/// Parameters of a stage that takes none.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
impl Params for NoParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[];
}

/// Parse a stage's TOML table (as text) into its typed parameters.
pub fn parse_params<P: Params>(stage: &str, toml_text: &str) -> Result<P> {
    toml::from_str(toml_text).map_err(|e| {
        Error::params(format!("stage `{stage}`: {}", e.message()))
            .with_help(format!("known keys: {}", key_list(P::DOCS)))
    })
}

fn key_list(docs: &[(&str, &str)]) -> String {
    if docs.is_empty() {
        "none (this stage takes no parameters)".into()
    } else {
        docs.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
    }
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub key: String,
    /// The default as a TOML value; `None` when the key has no default (required, or optional
    /// and absent by default).
    pub default_toml: Option<String>,
    pub doc: String,
}

/// The declared parameters of `P`, with defaults taken from `P::default()`.
pub fn param_infos<P: Params>() -> Vec<ParamInfo> {
    let defaults = toml::Table::try_from(P::default()).unwrap_or_default();
    P::DOCS
        .iter()
        .map(|(key, doc)| ParamInfo {
            key: key.to_string(),
            default_toml: defaults.get(*key).map(|v| v.to_string()),
            doc: doc.to_string(),
        })
        .collect()
}

/// What a stage says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct StageInfo {
    pub kind: StageKind,
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamInfo>,
}

impl StageInfo {
    /// The registry key, e.g. `saliency.context-aware`.
    pub fn key(&self) -> String {
        format!("{}.{}", kind_name(self.kind), self.name)
    }
}

/// The TOML/CLI name of a stage kind.
pub fn kind_name(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Model => "model",
        StageKind::Relevance => "relevance",
        StageKind::Saliency => "saliency",
        StageKind::Renderer => "renderer",
        _ => "unknown",
    }
}

/// A model backend stage: its parameters say what to load.
pub trait ModelStage: Model + Sized + 'static {
    type Params: Params;
    fn load(params: Self::Params) -> Result<Self>;
}
/// A relevance stage.
pub trait RelevanceStage: Relevance + Sized + 'static {
    type Params: Params;
    fn build(params: Self::Params) -> Result<Self>;
}
/// A saliency stage.
pub trait SaliencyStage: Saliency + Sized + 'static {
    type Params: Params;
    fn build(params: Self::Params) -> Result<Self>;
}
/// A renderer stage.
pub trait RendererStage: Renderer + Sized + 'static {
    type Params: Params;
    fn build(params: Self::Params) -> Result<Self>;
}

/// How to build a stage from its name and its parameters (TOML text).
#[derive(Clone, Copy)]
pub enum Factory {
    Model(fn(&str, &str) -> Result<Box<dyn Model>>),
    Relevance(fn(&str, &str) -> Result<Box<dyn Relevance>>),
    Saliency(fn(&str, &str) -> Result<Box<dyn Saliency>>),
    Renderer(fn(&str, &str) -> Result<Box<dyn Renderer>>),
}

impl Factory {
    pub fn kind(&self) -> StageKind {
        match self {
            Factory::Model(_) => StageKind::Model,
            Factory::Relevance(_) => StageKind::Relevance,
            Factory::Saliency(_) => StageKind::Saliency,
            Factory::Renderer(_) => StageKind::Renderer,
        }
    }
}

/// A stage as a plugin declares it. Build one with [`StageDef::model`], [`StageDef::relevance`],
/// [`StageDef::saliency`] or [`StageDef::renderer`] (all `const`, for `export_plugin!`).
#[derive(Clone, Copy)]
pub struct StageDef {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub params: fn() -> Vec<ParamInfo>,
    pub factory: Factory,
}

fn load_model<T: ModelStage>(name: &str, p: &str) -> Result<Box<dyn Model>> {
    Ok(Box::new(T::load(parse_params::<T::Params>(name, p)?)?))
}
fn build_relevance<T: RelevanceStage>(name: &str, p: &str) -> Result<Box<dyn Relevance>> {
    Ok(Box::new(T::build(parse_params::<T::Params>(name, p)?)?))
}
fn build_saliency<T: SaliencyStage>(name: &str, p: &str) -> Result<Box<dyn Saliency>> {
    Ok(Box::new(T::build(parse_params::<T::Params>(name, p)?)?))
}
fn build_renderer<T: RendererStage>(name: &str, p: &str) -> Result<Box<dyn Renderer>> {
    Ok(Box::new(T::build(parse_params::<T::Params>(name, p)?)?))
}

impl StageDef {
    pub const fn model<T: ModelStage>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        StageDef {
            name,
            version,
            description,
            params: param_infos::<T::Params>,
            factory: Factory::Model(load_model::<T>),
        }
    }
    pub const fn relevance<T: RelevanceStage>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        StageDef {
            name,
            version,
            description,
            params: param_infos::<T::Params>,
            factory: Factory::Relevance(build_relevance::<T>),
        }
    }
    pub const fn saliency<T: SaliencyStage>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        StageDef {
            name,
            version,
            description,
            params: param_infos::<T::Params>,
            factory: Factory::Saliency(build_saliency::<T>),
        }
    }
    pub const fn renderer<T: RendererStage>(
        name: &'static str,
        version: &'static str,
        description: &'static str,
    ) -> Self {
        StageDef {
            name,
            version,
            description,
            params: param_infos::<T::Params>,
            factory: Factory::Renderer(build_renderer::<T>),
        }
    }

    pub fn info(&self) -> StageInfo {
        StageInfo {
            kind: self.factory.kind(),
            name: self.name.to_string(),
            version: self.version.to_string(),
            description: self.description.to_string(),
            params: (self.params)(),
        }
    }
}

/// A parameter table refused by [`check_params`]: the key, what is wrong, and a hint.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamError {
    pub key: String,
    pub message: String,
    pub help: String,
}

/// Check a stage's parameter table against its declared keys before the stage is built, as
/// `srhost check` does: unknown keys (with the known ones and a "did you mean"), and value
/// types against the defaults' (an integer is accepted for a float).
pub fn check_params(info: &StageInfo, params: &toml::Table) -> std::result::Result<(), ParamError> {
    let known: Vec<&str> = info.params.iter().map(|p| p.key.as_str()).collect();
    for (k, v) in params {
        let Some(p) = info.params.iter().find(|p| p.key == *k) else {
            return Err(ParamError {
                key: k.clone(),
                message: format!(
                    "unknown key for {} stage `{}`",
                    kind_name(info.kind),
                    info.name
                ),
                help: format!(
                    "its keys: {}{}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                    suggest(k, &known)
                ),
            });
        };
        if let Some(d) = &p.default_toml {
            if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {d}")) {
                if let Some(dv) = t.remove("v") {
                    let ok = dv.type_str() == v.type_str() || (dv.is_float() && v.is_integer());
                    if !ok {
                        return Err(ParamError {
                            key: k.clone(),
                            message: format!(
                                "expected {} (like the default {d}), got {}",
                                a_type(dv.type_str()),
                                a_type(v.type_str())
                            ),
                            help: p.doc.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn a_type(t: &str) -> String {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// "; did you mean `x`?" when a known key is one or two edits away (else "").
pub fn suggest(k: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|c| (edit_distance(k, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
