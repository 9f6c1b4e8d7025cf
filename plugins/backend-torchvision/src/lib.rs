//! `model.torchvision` (also accepted under its old name, `model.candle`): torchvision-style
//! CNNs from PyTorch `.pth` files or safetensors, run by sr-nn's graph executor.
//!
//! Architectures: AlexNet, VGG-11/13/16/19 (+ `_bn`), VGG-Face (VGG-16 topology), EfficientNet-
//! Lite0 (key names of PyPI `efficientnet-lite-pytorch`) and MTCNN ONet (facenet-pytorch).
//! The default is the ImageNet EfficientNet-Lite0 shipped in `assets/models/`.

pub mod archs;
pub mod pth;
pub mod weights;

use serde::{Deserialize, Serialize};
use sr_core::{Error, Graph, Model, ModelInfo, ModelStage, Params, Result, StageDef, Tensor};
use sr_nn::Executor;

/// The ImageNet class names in torchvision's order.
pub const IMAGENET_LABELS: &str = include_str!("../../../assets/labels/imagenet.txt");

/// The model shipped with srhost, relative to the repository root.
pub const DEFAULT_WEIGHTS: &str = "assets/models/efficientnet-lite0.safetensors";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TorchvisionParams {
    /// Architecture name (see `archs::ARCHS`).
    pub arch: String,
    /// Weight file: `.safetensors`, or a PyTorch `.pth`/`.pt` state dict.
    pub weights: String,
    /// `"imagenet"`, `"onet"`, or a text file with one class name per line. Default: the arch's.
    pub labels: Option<String>,
    /// Shorter side after resizing (0: resize straight to the input size). Default: the arch's.
    pub resize: Option<usize>,
    /// Per-channel mean on the [0, 1] scale. Default: the arch's.
    pub mean: Option<Vec<f32>>,
    /// Per-channel std on the [0, 1] scale. Default: the arch's.
    pub std: Option<Vec<f32>>,
}

impl Default for TorchvisionParams {
    fn default() -> Self {
        TorchvisionParams {
            arch: "efficientnet_lite0".into(),
            weights: DEFAULT_WEIGHTS.into(),
            labels: None,
            resize: None,
            mean: None,
            std: None,
        }
    }
}

impl Params for TorchvisionParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        ("arch", "alexnet, vgg11/13/16/19 (+ _bn), vgg_face, resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d/64x4d, wide_resnet50/101_2, efficientnet_lite0, mtcnn_onet"),
        ("weights", "a .safetensors or PyTorch .pth/.pt state dict with torchvision key names"),
        ("labels", "\"imagenet\", \"onet\", or a file with one class name per line (default: the arch's; vgg_face has none)"),
        ("resize", "shorter side before the centre crop; 0 resizes straight to the input (default: the arch's)"),
        ("mean", "per-channel mean on [0, 1] (default: the arch's)"),
        ("std", "per-channel std on [0, 1] (default: the arch's)"),
    ];
}

pub use sr_core::resolve_path as resolve;

/// A loaded model.
pub struct TorchvisionModel {
    info: ModelInfo,
    exec: Executor,
}

impl TorchvisionModel {
    /// Build from weights already in memory (used by tests and converters).
    pub fn from_weights(
        p: &TorchvisionParams,
        weights: &weights::Weights,
        source: &str,
    ) -> Result<Self> {
        let arch = archs::canonical(&p.arch);
        let d = archs::defaults(&arch).ok_or_else(|| {
            Error::params(format!("`arch`: unknown architecture `{}`", p.arch))
                .with_help(format!("known: {}", archs::ARCHS.join(", ")))
        })?;
        let graph = archs::build(&arch, weights, source)?;
        let classes = graph.infer_shapes()?[graph.output][1];
        let labels = load_labels(p.labels.as_deref().unwrap_or(d.labels), classes)?;
        let mean = p.mean.clone().unwrap_or(d.mean.to_vec());
        let std = p.std.clone().unwrap_or(d.std.to_vec());
        if mean.len() != 3 || std.len() != 3 || std.iter().any(|s| *s <= 0.0) {
            return Err(Error::params(
                "`mean` and `std` need 3 values each, std > 0",
            ));
        }
        let info = ModelInfo {
            name: arch,
            input_shape: d.input.to_vec(),
            mean,
            std,
            resize: p.resize.unwrap_or(d.resize),
            labels,
        };
        sr_core::preprocess::check_resize(info.resize, &info.input_shape)?;
        Ok(TorchvisionModel {
            info,
            exec: Executor::new(graph)?,
        })
    }
}

fn load_labels(spec: &str, classes: usize) -> Result<Vec<String>> {
    let (names, what): (Vec<String>, String) = match spec {
        "imagenet" => (
            IMAGENET_LABELS.lines().map(str::to_string).collect(),
            "the ImageNet labels".into(),
        ),
        "onet" => (
            vec!["not face".into(), "face".into()],
            "the ONet labels".into(),
        ),
        "" => {
            return Err(
                Error::params("`labels`: this architecture has no built-in label set")
                    .with_help("give labels = \"path/to/names.txt\" (one class name per line)"),
            )
        }
        path => {
            let (names, p) = sr_core::read_label_file(path)?;
            (names, p.display().to_string())
        }
    };
    if names.len() != classes {
        return Err(Error::params(format!(
            "`labels`: {what} have {} names but the weights have {classes} classes",
            names.len()
        ))
        .with_help("give labels = \"path/to/names.txt\" with one name per class"));
    }
    Ok(names)
}

impl ModelStage for TorchvisionModel {
    type Params = TorchvisionParams;

    fn load(p: TorchvisionParams) -> Result<Self> {
        let path = resolve(&p.weights);
        let w = weights::load(&path)?;
        Self::from_weights(&p, &w, &path.display().to_string())
    }
}

impl Model for TorchvisionModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }
    fn graph(&self) -> Result<Graph> {
        Ok(self.exec.graph().clone())
    }
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.exec.forward(input)
    }
    fn trace(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        self.exec.trace(input)
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::model::<TorchvisionModel>(
            "torchvision",
            env!("CARGO_PKG_VERSION"),
            "torchvision-style AlexNet / VGG / VGG-Face / EfficientNet-Lite0 / MTCNN ONet from PyTorch .pth or safetensors weights, run by sr-nn.",
        ),
        StageDef::model::<TorchvisionModel>(
            "candle",
            env!("CARGO_PKG_VERSION"),
            "The old name of model.torchvision (same stage, same parameters).",
        ),
    ],
}
