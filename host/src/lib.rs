//! The srhost library: what the `srhost` command runs, reachable from other crates (the Python
//! package, the fuzz targets). `spec` reads and checks a pipeline TOML, `stages` builds its
//! stages from a [`sr_core::Registry`], `runner` runs it over the images, `report` writes the
//! run-wide tables.

pub mod dataset;
pub mod fingerprint;
pub mod process;
pub mod records;
pub mod report;
pub mod runner;
pub mod spec;
pub mod stages;

// Built-in stages. Each built-in plugin crate must be named once, or the linker drops its
// `inventory` registrations.
use sr_backend_onnx as _;
use sr_backend_torchvision as _;
use sr_relevance_gradient as _;
use sr_relevance_lrp as _;
use sr_render_basic as _;
use sr_saliency_context_aware as _;
use sr_saliency_itti as _;
