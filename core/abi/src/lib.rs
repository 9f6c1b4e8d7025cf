//! `sr-abi`: the stable plugin ABI of srhost.
//!
//! This crate depends on `abi_stable` and nothing else. Its package version *is* the plugin ABI
//! version: a plugin built against `sr-abi 0.1.x` loads into any host built against `0.1.y`
//! (abi_stable checks the version number and then the layout of every type reachable from the
//! root module when the library is loaded).
//!
//! What crosses the boundary:
//! - data: [`FfiTensor`] and [`FfiImage`] (shared `RArc` buffers, no copy per call),
//!   [`FfiGraph`] (a model's layers, weights as shared tensors), [`FfiError`];
//! - one `#[sabi_trait]` object per stage kind: [`FfiModel`], [`FfiRelevance`], [`FfiSaliency`],
//!   [`FfiRenderer`]; a relevance method binds to a model once ([`FfiRelevance::bind`]) and
//!   explains its images through the [`FfiExplainer`] it returns;
//! - the root module [`PluginModRef`], a prefix type: new fields are only ever added after the
//!   last one, so old plugins keep loading.
//!
//! Stage parameters travel as TOML text: the host validates them against the stage's declared
//! parameters ([`FfiParamInfo`]) and the stage deserialises its own typed struct.
//!
//! Nobody should implement these traits by hand: `sr-core`'s `export_plugin!` macro adapts
//! native stages and wraps every call in `catch_unwind` (a panic must never unwind across the
//! boundary: abi_stable aborts the process when it does).
#![allow(non_camel_case_types)]
// abi_stable 0.11's derives emit impls inside consts, which newer rustc lints.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec},
    StableAbi,
};

/// The ABI version string (the `sr-abi` package version).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What went wrong, as a code the host can act on. Non-exhaustive across the ABI: a newer
/// plugin may send a code this host does not know, which it then shows as "unknown".
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u32; 2], traits(Debug, Clone, PartialEq, Eq))))]
#[non_exhaustive]
pub enum ErrorCode {
    /// A stage parameter is missing, unknown or has the wrong type or value.
    InvalidParams,
    /// The input (image, tensor, weights file) is not what the stage expects.
    InvalidInput,
    /// The request is well-formed but this stage cannot do it (an op, a layer kind...).
    Unsupported,
    /// Reading or writing a file failed.
    Io,
    /// The stage panicked; the panic was caught at the boundary.
    Panic,
    /// A bug or an unexpected state inside the stage.
    Internal,
}

/// `ErrorCode` wrapped for the ABI.
pub type FfiErrorCode = ErrorCode_NE;

/// An error crossing the ABI: data only (no downcasts across libraries).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiError {
    pub code: FfiErrorCode,
    /// What went wrong, naming the file, key or layer.
    pub message: RString,
    /// How to fix it; empty when there is nothing useful to say.
    pub help: RString,
}

impl FfiError {
    pub fn new(code: ErrorCode, message: impl Into<RString>, help: impl Into<RString>) -> Self {
        FfiError {
            code: FfiErrorCode::new(code),
            message: message.into(),
            help: help.into(),
        }
    }
}

/// A dense f32 tensor in row-major order. The buffer is shared, so passing a tensor across the
/// ABI (or keeping the weights of a model alive) never copies it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiTensor {
    pub shape: RVec<u64>,
    pub data: RArc<RVec<f32>>,
}

/// A named tensor (a layer parameter such as `weight` or `bias`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiNamedTensor {
    pub name: RString,
    pub tensor: FfiTensor,
}

/// An image or map: `height x width x channels`, row-major, interleaved channels, values
/// in [0, 1] unless the stage documents otherwise.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiImage {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: RArc<RVec<f32>>,
}

/// The kinds of stage a plugin can provide.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u32; 2], traits(Debug, Clone, PartialEq, Eq))))]
#[non_exhaustive]
pub enum StageKind {
    /// A model backend: loads weights, exposes the graph, runs forward and trace.
    Model,
    /// A relevance method (LRP, gradient...): explains a prediction as an input-space map.
    Relevance,
    /// A saliency method: turns an image-like map into an attention map in [0, 1].
    Saliency,
    /// A renderer: turns an image's results into files (PNG, HTML, text).
    Renderer,
}

/// `StageKind` wrapped for the ABI.
pub type FfiStageKind = StageKind_NE;

/// One declared parameter of a stage.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiParamInfo {
    pub key: RString,
    /// The default as a TOML value (`0.25`, `"abs-rgb"`, `[1.0, 0.8]`); empty when required.
    pub default_toml: RString,
    pub doc: RString,
}

/// What a plugin says about one of its stages.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiStageInfo {
    pub kind: FfiStageKind,
    pub name: RString,
    pub version: RString,
    pub description: RString,
    pub params: RVec<FfiParamInfo>,
}

/// A model's input contract.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiModelInfo {
    pub name: RString,
    /// Input shape without the batch dimension: `[C, H, W]`.
    pub input_shape: RVec<u64>,
    /// Per-channel mean and std applied after scaling pixels to [0, 1].
    pub mean: RVec<f32>,
    pub std: RVec<f32>,
    /// Shorter side after resizing, before the centre crop to `H x W` (0: resize straight to
    /// `H x W`).
    pub resize: u32,
    pub labels: RVec<RString>,
}

/// One node of a model graph. `op` names the operation (see sr-core's graph IR), `attrs_toml`
/// holds its attributes as a TOML table, `inputs` index earlier nodes.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiNode {
    pub name: RString,
    pub op: RString,
    pub attrs_toml: RString,
    pub inputs: RVec<u32>,
    pub params: RVec<FfiNamedTensor>,
}

/// A model as a DAG in topological order; node 0 is the input.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiGraph {
    pub nodes: RVec<FfiNode>,
    pub output: u32,
}

/// Per-sample statistics of an explanation.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct FfiRelevanceStats {
    pub target: u32,
    /// Sum of the input relevance.
    pub relevance_sum: f64,
    /// The score relevance started from (the target's logit by default).
    pub target_score: f64,
}

/// The result of a relevance method: an `N x C x H x W` map and one stats entry per sample.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiExplanation {
    pub relevance: FfiTensor,
    pub stats: RVec<FfiRelevanceStats>,
}

/// One relevance branch of an image, as given to renderers.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiBranchMaps {
    pub branch: RString,
    /// `C x H x W` relevance in model-input space.
    pub relevance: FfiTensor,
    /// The SR map (saliency of the relevance), when a saliency stage ran.
    pub sr: ROption<FfiImage>,
}

/// Everything a renderer may draw for one image.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiRenderInput {
    /// The image's name (file stem), used in titles.
    pub image_name: RString,
    /// The photo as decoded, RGB in [0, 1]; when a model ran and the photo has more than 4
    /// megapixels, resized to about 4 megapixels (the model's input is `model_input`).
    pub photo: FfiImage,
    /// The photo as the model saw it (resized and cropped), when a model ran.
    pub model_input: ROption<FfiImage>,
    /// The predicted label, empty without a model.
    pub label: RString,
    pub branches: RVec<FfiBranchMaps>,
    /// Saliency of the photo itself ("human attention"), when a saliency stage ran.
    pub photo_saliency: ROption<FfiImage>,
    /// The ground-truth label, when the run has a `labels.csv` entry for this image.
    pub truth: ROption<RString>,
}

/// A file a renderer produced. `name` is relative to the image's output folder.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiArtifact {
    pub name: RString,
    pub bytes: RVec<u8>,
}

/// A loaded model.
#[sabi_trait]
pub trait FfiModel: Send + Sync {
    fn info(&self) -> RResult<FfiModelInfo, FfiError>;
    fn graph(&self) -> RResult<FfiGraph, FfiError>;
    /// `N x C x H x W` normalised input to `N x classes` logits.
    fn forward(&self, input: &FfiTensor) -> RResult<FfiTensor, FfiError>;
    /// Every node's output, in graph order.
    #[sabi(last_prefix_field)]
    fn trace(&self, input: &FfiTensor) -> RResult<RVec<FfiTensor>, FfiError>;
}
/// An owned model: a backend's, or the host's model shared with a relevance method that binds
/// to it (the box then holds a reference count, not a copy).
pub type FfiModelBox = FfiModel_TO<'static, RBox<()>>;

/// The image a request is about (empty strings for a bare tensor).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiImageId {
    /// The image's path.
    pub path: RString,
    /// The input folder it was found under.
    pub root: RString,
}

/// One explanation request for a bound relevance method.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FfiRequest {
    /// `N x C x H x W`, normalised.
    pub input: FfiTensor,
    /// One class per sample.
    pub targets: RVec<u32>,
    /// The model's `N x classes` logits for `input`, when the host has them.
    pub logits: ROption<FfiTensor>,
    /// One per sample, or empty.
    pub images: RVec<FfiImageId>,
}

/// A relevance method bound to one model.
#[sabi_trait]
pub trait FfiExplainer: Send + Sync {
    #[sabi(last_prefix_field)]
    fn explain(&self, request: &FfiRequest) -> RResult<FfiExplanation, FfiError>;
}
pub type FfiExplainerBox = FfiExplainer_TO<'static, RBox<()>>;

/// A relevance method.
#[sabi_trait]
pub trait FfiRelevance: Send + Sync {
    /// Prepare the method for `model` (shared, kept alive by the explainer) once; every image
    /// of that model then goes through the returned explainer.
    #[sabi(last_prefix_field)]
    fn bind(&self, model: FfiModelBox) -> RResult<FfiExplainerBox, FfiError>;
}
pub type FfiRelevanceBox = FfiRelevance_TO<'static, RBox<()>>;

/// A saliency method.
#[sabi_trait]
pub trait FfiSaliency: Send + Sync {
    /// An `H x W x C` image in [0, 1] to an `H x W x 1` map in [0, 1].
    #[sabi(last_prefix_field)]
    fn saliency(&self, input: &FfiImage) -> RResult<FfiImage, FfiError>;
}
pub type FfiSaliencyBox = FfiSaliency_TO<'static, RBox<()>>;

/// A renderer.
#[sabi_trait]
pub trait FfiRenderer: Send + Sync {
    #[sabi(last_prefix_field)]
    fn render(&self, input: &FfiRenderInput) -> RResult<RVec<FfiArtifact>, FfiError>;
}
pub type FfiRendererBox = FfiRenderer_TO<'static, RBox<()>>;

/// The root module every plugin exports. A prefix type: fields are only ever added after the
/// last one (and marked as the new last prefix field), so a host can load older plugins.
///
/// Every `create_*` takes the stage name and its parameters as TOML text.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's name (its crate name by convention).
    pub plugin_name: extern "C" fn() -> RString,
    /// The plugin's own version.
    pub plugin_version: extern "C" fn() -> RString,
    /// Every stage the plugin provides.
    pub stages: extern "C" fn() -> RVec<FfiStageInfo>,
    pub create_model: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<FfiModelBox, FfiError>,
    pub create_relevance: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<FfiRelevanceBox, FfiError>,
    pub create_saliency: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<FfiSaliencyBox, FfiError>,
    #[sabi(last_prefix_field)]
    pub create_renderer: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<FfiRendererBox, FfiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "sr_plugin";
    const NAME: &'static str = "srhost plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

// Re-exported so plugins and the SDK macro name one abi_stable, the one this ABI was built with.
pub use abi_stable;
