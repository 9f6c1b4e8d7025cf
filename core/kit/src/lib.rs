//! `sr-core`: srhost's plugin kit. Everything a stage needs to plug in, and nothing of the
//! numeric engine (that is `sr-nn`), so a saliency or renderer plugin builds on this crate
//! alone.
//!
//! - [`stage`]: the stage traits (model, relevance, saliency, renderer), typed parameters and
//!   the [`StageDef`] a plugin registers;
//! - [`graph`]: the graph IR that backends produce and relevance methods walk, with shape
//!   inference; [`geometry`]: the window arithmetic every output size comes from;
//! - [`tensor`]: tensors and images on shared buffers;
//! - [`registry`]: every stage by `"kind.name"`, built-in (via `inventory`) or loaded from a
//!   plugin `.so`;
//! - [`ffi`]: adapters between native stages and the `sr-abi` objects;
//! - [`io`]: the bounded reader every file srhost is given goes through;
//! - [`preprocess`], [`npy`], [`metrics`]: photos as torchvision prepares them, `.npy` files,
//!   SSIM and region perturbation;
//! - [`sr`]: the SR vocabulary (how a relevance map feeds saliency, which classes are
//!   explained) and operations, shared by the host and the Python package;
//! - [`testing`]: run a plugin's stage as the host would, in the plugin's own tests;
//! - [`export_plugin!`]: the plugin SDK macro.

pub mod contract;
pub mod error;
pub mod ffi;
pub mod geometry;
pub mod graph;
pub mod io;
pub mod metrics;
pub mod npy;
pub mod preprocess;
pub mod registry;
pub mod sr;
pub mod stage;
pub mod tensor;
pub mod testing;

pub use error::{catch_panic, Error, Result};
pub use graph::{Graph, Node, NodeId, Op};
pub use registry::{BuiltinStage, LoadedPlugin, Registry, StageEntry, StageSource};
pub use sr_abi::{ErrorCode, StageKind};
pub use stage::*;
pub use tensor::{Image, Tensor};

/// A data file a stage parameter names (weights, labels, an ONNX file): as given (relative to
/// the current directory), else, for a relative path, relative to the srhost source tree this
/// binary was built from, so the shipped assets work from any directory.
pub fn resolve_path(path: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(path);
    if p.exists() || p.is_absolute() {
        return p;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(&p);
    if repo.exists() {
        repo
    } else {
        p
    }
}

/// A label file (one class name per line; blank lines skipped), found by [`resolve_path`].
/// Returns the names and the path read. Errors name the file and the `labels` key.
pub fn read_label_file(path: &str) -> Result<(Vec<String>, std::path::PathBuf)> {
    let p = resolve_path(path);
    let text = io::read_text_bounded(&p, io::MAX_LABEL_FILE_BYTES, "a label file")
        .map_err(|e| e.context("`labels`"))?;
    let names = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok((names, p))
}

#[doc(hidden)]
pub use inventory;
/// The ABI crate, for the code `export_plugin!` generates.
pub use sr_abi as abi;

/// Functions called by the code that [`export_plugin!`] generates for a `.so`. Not for direct
/// use.
#[doc(hidden)]
pub mod sdk {
    use crate::error::{catch_panic, Error};
    use crate::ffi::{self, to_r};
    use crate::stage::{kind_name, Factory, StageDef, StageKind};
    use abi_stable::std_types::{RResult, RStr, RVec};
    use sr_abi::*;

    pub fn stages(defs: &[StageDef]) -> RVec<FfiStageInfo> {
        // A panic while describing the stages leaves the plugin with none listed.
        catch_panic("plugin stages()", || {
            Ok(defs
                .iter()
                .map(|d| ffi::stage_info_to_ffi(&d.info()))
                .collect())
        })
        .unwrap_or_default()
    }

    fn find(defs: &[StageDef], kind: StageKind, name: RStr<'_>) -> crate::Result<StageDef> {
        defs.iter()
            .find(|d| d.factory.kind() == kind && d.name == name.as_str())
            .copied()
            .ok_or_else(|| {
                Error::params(format!(
                    "this plugin has no {} stage `{name}`",
                    kind_name(kind)
                ))
            })
    }

    macro_rules! creator {
        ($fn_name:ident, $kind:ident, $boxed:ty, $export:path) => {
            pub fn $fn_name(
                defs: &[StageDef],
                name: RStr<'_>,
                params: RStr<'_>,
            ) -> RResult<$boxed, FfiError> {
                let key = format!("{}.{name}", kind_name(StageKind::$kind));
                let r = catch_panic(&key, || match find(defs, StageKind::$kind, name)?.factory {
                    Factory::$kind(f) => f(name.as_str(), params.as_str()),
                    _ => unreachable!("find() filters on the kind"),
                });
                to_r(r, |inner| $export(key.clone(), inner))
            }
        };
    }
    creator!(create_model, Model, FfiModelBox, ffi::export_model);
    creator!(
        create_relevance,
        Relevance,
        FfiRelevanceBox,
        ffi::export_relevance
    );
    creator!(
        create_saliency,
        Saliency,
        FfiSaliencyBox,
        ffi::export_saliency
    );
    creator!(
        create_renderer,
        Renderer,
        FfiRendererBox,
        ffi::export_renderer
    );
}

/// Export a plugin's stages, both ways at once:
///
/// - as built-ins: each stage is registered with `inventory`, so a host that links the crate
///   (and references it, e.g. `use my_plugin as _;`) lists it;
/// - as a `.so`: when the plugin crate's `dynamic` feature is on, an `abi_stable` root module
///   is exported for `srhost --plugin-dir` / `[[plugin]] path = ...`. The feature keeps two
///   statically linked plugins from exporting the same root-module symbol.
///
/// ```ignore
/// sr_core::export_plugin! {
///     name: env!("CARGO_PKG_NAME"),
///     version: env!("CARGO_PKG_VERSION"),
///     stages: [
///         sr_core::StageDef::saliency::<MySaliency>("my-saliency", "1.0.0", "What it does."),
///     ],
/// }
/// ```
///
/// The plugin crate needs `crate-type = ["cdylib", "rlib"]`, a `dynamic = []` feature, and
/// `abi_stable` as a direct dependency (its export attribute names `::abi_stable`). Every call
/// into the plugin runs under `catch_unwind`: a panic becomes an error for that image.
///
/// The macro also defines `pub const SR_STAGES: &[StageDef]` beside itself: the stages, for the
/// plugin's tests ([`testing::PluginTest`]).
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, stages: [$($stage:expr),* $(,)?] $(,)?) => {
        $(
            $crate::inventory::submit! {
                $crate::BuiltinStage { plugin: $name, def: $stage }
            }
        )*

        /// The stages this plugin exports (for its tests: `sr_core::testing::PluginTest`).
        pub const SR_STAGES: &[$crate::StageDef] = &[$($stage),*];

        #[allow(unexpected_cfgs)]
        #[cfg(feature = "dynamic")]
        #[doc(hidden)]
        pub mod __sr_plugin_export {
            #[allow(unused_imports)]
            use super::*;
            use $crate::abi::abi_stable::std_types::{RResult, RStr, RString, RVec};
            use $crate::abi::abi_stable::prefix_type::PrefixTypeTrait;
            use $crate::abi::*;

            const STAGES: &[$crate::StageDef] = super::SR_STAGES;

            extern "C" fn plugin_name() -> RString { RString::from($name) }
            extern "C" fn plugin_version() -> RString { RString::from($version) }
            extern "C" fn stages() -> RVec<FfiStageInfo> { $crate::sdk::stages(STAGES) }
            extern "C" fn create_model(n: RStr<'_>, p: RStr<'_>) -> RResult<FfiModelBox, FfiError> {
                $crate::sdk::create_model(STAGES, n, p)
            }
            extern "C" fn create_relevance(n: RStr<'_>, p: RStr<'_>) -> RResult<FfiRelevanceBox, FfiError> {
                $crate::sdk::create_relevance(STAGES, n, p)
            }
            extern "C" fn create_saliency(n: RStr<'_>, p: RStr<'_>) -> RResult<FfiSaliencyBox, FfiError> {
                $crate::sdk::create_saliency(STAGES, n, p)
            }
            extern "C" fn create_renderer(n: RStr<'_>, p: RStr<'_>) -> RResult<FfiRendererBox, FfiError> {
                $crate::sdk::create_renderer(STAGES, n, p)
            }

            #[::abi_stable::export_root_module]
            pub fn sr_plugin_root_module() -> PluginModRef {
                PluginMod {
                    plugin_name,
                    plugin_version,
                    stages,
                    create_model,
                    create_relevance,
                    create_saliency,
                    create_renderer,
                }
                .leak_into_prefix()
            }
        }
    };
}
