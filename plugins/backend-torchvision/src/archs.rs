//! Architectures as graph builders over torchvision-style state dicts.
//!
//! Layer widths and class counts are read from the weights, so the narrow test models (every
//! conv width divided by 8) and VGG-Face (2622 classes) need no special case. Node names are
//! the state-dict module names (`features.0`, `_blocks.3._depthwise_conv`), so TOML per-layer
//! overrides and error messages use the names a PyTorch user knows.

use crate::weights::Weights;
use sr_core::{Error, Graph, Node, NodeId, Op, Result, Tensor};
use std::collections::BTreeSet;

/// The preprocessing and label set an architecture expects by default.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchDefaults {
    pub input: [usize; 3],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: usize,
    /// `"imagenet"`, `"onet"` (not face / face), or `""` (must be given).
    pub labels: &'static str,
}

/// Every architecture this backend builds, by its canonical name.
pub const ARCHS: &[&str] = &[
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vgg_face",
    "efficientnet_lite0",
    "mtcnn_onet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
];

/// The DenseNet family: layers per dense block. Growth rate, bottleneck width and the initial
/// width are read from the weights.
fn densenet_layout(arch: &str) -> Option<[usize; 4]> {
    Some(match arch {
        "densenet121" => [6, 12, 24, 16],
        "densenet161" => [6, 12, 36, 24],
        "densenet169" => [6, 12, 32, 32],
        "densenet201" => [6, 12, 48, 32],
        _ => return None,
    })
}

/// torchvision's pretrained DenseNet files name a dense layer's modules `norm.1`, `conv.2`, ...
/// where the model names them `norm1`, `conv2` (torchvision renames them on load the same way).
fn densenet_keys(w: &Weights) -> Weights {
    w.iter()
        .map(|(k, t)| {
            let mut key = k.clone();
            for m in ["norm", "relu", "conv"] {
                for i in ["1", "2"] {
                    let old = format!(".{m}.{i}.");
                    if key.contains("denselayer") && key.contains(&old) {
                        key = key.replacen(&old, &format!(".{m}{i}."), 1);
                    }
                }
            }
            (key, t.clone())
        })
        .collect()
}

/// The ResNet family: blocks per stage, and whether the blocks are bottlenecks. Widths and
/// groups (ResNeXt, wide ResNets) are read from the weights.
fn resnet_layout(arch: &str) -> Option<([usize; 4], bool)> {
    Some(match arch {
        "resnet18" => ([2, 2, 2, 2], false),
        "resnet34" => ([3, 4, 6, 3], false),
        "resnet50" | "resnext50_32x4d" | "wide_resnet50_2" => ([3, 4, 6, 3], true),
        "resnet101" | "resnext101_32x8d" | "resnext101_64x4d" | "wide_resnet101_2" => {
            ([3, 4, 23, 3], true)
        }
        "resnet152" => ([3, 8, 36, 3], true),
        _ => return None,
    })
}

/// `vgg16-bn`, `VGG16_BN` and `vgg16_bn` are one name.
pub fn canonical(arch: &str) -> String {
    arch.trim().to_ascii_lowercase().replace('-', "_")
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

pub fn defaults(arch: &str) -> Option<ArchDefaults> {
    let imagenet = ArchDefaults {
        input: [3, 224, 224],
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        resize: 256,
        labels: "imagenet",
    };
    Some(match arch {
        "alexnet" | "vgg11" | "vgg11_bn" | "vgg13" | "vgg13_bn" | "vgg16" | "vgg16_bn"
        | "vgg19" | "vgg19_bn" => imagenet,
        a if resnet_layout(a).is_some() || densenet_layout(a).is_some() => imagenet,
        // VGG-Face: 224 x 224 face crops, the mean face pixel subtracted on the 0-255 scale.
        "vgg_face" => ArchDefaults {
            input: [3, 224, 224],
            mean: [
                (129.1863 / 255.0) as f32,
                (104.7624 / 255.0) as f32,
                (93.5940 / 255.0) as f32,
            ],
            std: [(1.0 / 255.0) as f32; 3],
            resize: 0,
            labels: "",
        },
        // TF EfficientNet-Lite: MEAN_RGB = 127, STDDEV_RGB = 128 (on 0-255).
        "efficientnet_lite0" => ArchDefaults {
            input: [3, 224, 224],
            mean: [(127.0f64 / 255.0) as f32; 3],
            std: [(128.0f64 / 255.0) as f32; 3],
            resize: 256,
            labels: "imagenet",
        },
        // MTCNN: (x - 127.5) / 128 on 0-255, 48 x 48 crops.
        "mtcnn_onet" => ArchDefaults {
            input: [3, 48, 48],
            mean: [(127.5f64 / 255.0) as f32; 3],
            std: [(128.0f64 / 255.0) as f32; 3],
            resize: 0,
            labels: "onet",
        },
        _ => return None,
    })
}

/// Builds a graph while consuming named weights, so unused keys can be reported.
struct Builder<'w> {
    w: &'w Weights,
    used: BTreeSet<String>,
    nodes: Vec<Node>,
    source: &'w str,
    arch: &'w str,
}

impl<'w> Builder<'w> {
    fn new(w: &'w Weights, source: &'w str, arch: &'w str, input: [usize; 3]) -> Self {
        let nodes = vec![Node {
            name: "input".into(),
            op: Op::Input {
                shape: input.to_vec(),
            },
            inputs: vec![],
            params: vec![],
        }];
        Builder {
            w,
            used: BTreeSet::new(),
            nodes,
            source,
            arch,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.w.contains_key(key)
    }

    fn take(&mut self, key: &str) -> Result<Tensor> {
        let t = self.w.get(key).cloned().ok_or_else(|| {
            Error::input(format!(
                "{}: missing key `{key}` for arch `{}`",
                self.source, self.arch
            ))
            .with_help("check `arch`: the weights do not have the layers this architecture needs")
        })?;
        self.used.insert(key.to_string());
        Ok(t)
    }

    fn add(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<NodeId>,
        params: Vec<(&str, Tensor)>,
    ) -> NodeId {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            params: params
                .into_iter()
                .map(|(k, t)| (k.to_string(), t))
                .collect(),
        });
        self.nodes.len() - 1
    }

    /// Output shape of node `id` (batch 1), checking every parameter shape so far.
    fn shape(&self, id: NodeId) -> Result<Vec<usize>> {
        let g = Graph {
            nodes: self.nodes.clone(),
            output: id,
        };
        Ok(g.infer_shapes()
            .map_err(|e| self.shape_error(e))?
            .swap_remove(id))
    }

    fn shape_error(&self, e: Error) -> Error {
        e.context(format!("{} (arch `{}`)", self.source, self.arch))
            .with_help("the weights do not fit this architecture: check `arch` and `weights`")
    }

    fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        stride: usize,
        padding: [usize; 4],
        groups: usize,
    ) -> Result<NodeId> {
        let mut params = vec![("weight", self.take(&format!("{name}.weight"))?)];
        if self.has(&format!("{name}.bias")) {
            params.push(("bias", self.take(&format!("{name}.bias"))?));
        }
        let id = self.add(
            name,
            Op::Conv2d {
                stride: [stride; 2],
                padding,
                dilation: [1, 1],
                groups,
            },
            vec![x],
            params,
        );
        self.shape(id)?;
        Ok(id)
    }

    fn linear(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let mut params = vec![("weight", self.take(&format!("{name}.weight"))?)];
        if self.has(&format!("{name}.bias")) {
            params.push(("bias", self.take(&format!("{name}.bias"))?));
        }
        let id = self.add(name, Op::Linear, vec![x], params);
        self.shape(id)?;
        Ok(id)
    }

    fn bn(&mut self, name: &str, x: NodeId, eps: f32) -> Result<NodeId> {
        let params = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|p| Ok((*p, self.take(&format!("{name}.{p}"))?)))
            .collect::<Result<Vec<_>>>()?;
        let id = self.add(name, Op::BatchNorm { eps }, vec![x], params);
        self.shape(id)?;
        Ok(id)
    }

    fn op(&mut self, name: &str, op: Op, inputs: Vec<NodeId>) -> NodeId {
        self.add(name, op, inputs, vec![])
    }

    fn max_pool(&mut self, name: &str, x: NodeId, k: usize, s: usize, ceil: bool) -> NodeId {
        self.op(
            name,
            Op::MaxPool {
                kernel: [k, k],
                stride: [s, s],
                padding: [0; 4],
                ceil_mode: ceil,
            },
            vec![x],
        )
    }

    /// torchvision's `AdaptiveAvgPool2d(size)`: the identity when the map is already
    /// `size x size`, a plain average pool when the size divides the map.
    fn adaptive_avg_pool(&mut self, name: &str, x: NodeId, size: usize) -> Result<NodeId> {
        let s = self.shape(x)?;
        let (h, w) = (s[2], s[3]);
        if h == size && w == size {
            return Ok(x);
        }
        if h % size != 0 || w % size != 0 {
            return Err(Error::unsupported(format!(
                "arch `{}`: adaptive average pooling of a {h}x{w} map to {size}x{size} (only exact divisions are supported)",
                self.arch
            ))
            .with_help("use the architecture's own input size (224 x 224)"));
        }
        Ok(self.op(
            name,
            Op::AvgPool {
                kernel: [h / size, w / size],
                stride: [h / size, w / size],
                padding: [0; 4],
                ceil_mode: false,
                count_include_pad: true,
            },
            vec![x],
        ))
    }

    /// torchvision's ImageNet stem (ResNet, DenseNet): a 7 x 7 stride-2 convolution (padding
    /// 3), BatchNorm, ReLU and a 3 x 3 stride-2 max pooling (padding 1), under these names.
    fn stem(&mut self, [conv, bn, relu, pool]: [&str; 4], eps: f32) -> Result<NodeId> {
        let mut x = self.conv(conv, 0, 2, [3; 4], 1)?;
        x = self.bn(bn, x, eps)?;
        x = self.op(relu, Op::Relu, vec![x]);
        Ok(self.op(
            pool,
            Op::MaxPool {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1; 4],
                ceil_mode: false,
            },
            vec![x],
        ))
    }

    fn finish(self, output: NodeId) -> Result<Graph> {
        let unused: Vec<&String> = self.w.keys().filter(|k| !self.used.contains(*k)).collect();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(6).map(|s| s.as_str()).collect();
            return Err(Error::input(format!(
                "{}: {} tensor(s) that arch `{}` does not use: {}{}",
                self.source,
                unused.len(),
                self.arch,
                shown.join(", "),
                if unused.len() > 6 { ", ..." } else { "" }
            ))
            .with_help("check `arch` (e.g. vgg16 vs vgg16_bn)"));
        }
        let g = Graph {
            nodes: self.nodes,
            output,
        };
        g.infer_shapes()?;
        Ok(g)
    }
}

/// Build `arch` from `weights` (read from `source`, named in errors).
pub fn build(arch: &str, weights: &Weights, source: &str) -> Result<Graph> {
    let d = defaults(arch).ok_or_else(|| {
        Error::params(format!("unknown arch `{arch}`"))
            .with_help(format!("known archs: {}", ARCHS.join(", ")))
    })?;
    let renamed;
    let weights = if densenet_layout(arch).is_some() {
        renamed = densenet_keys(weights);
        &renamed
    } else {
        weights
    };
    let mut b = Builder::new(weights, source, arch, d.input);
    let out = match arch {
        "alexnet" => alexnet(&mut b)?,
        "efficientnet_lite0" => efficientnet_lite0(&mut b)?,
        "mtcnn_onet" => onet(&mut b)?,
        a if resnet_layout(a).is_some() => {
            let (blocks, bottleneck) = resnet_layout(a).unwrap_or_default();
            resnet(&mut b, blocks, bottleneck)?
        }
        a if densenet_layout(a).is_some() => {
            densenet(&mut b, densenet_layout(a).unwrap_or_default())?
        }
        vgg => {
            let (depth, bn) = match vgg {
                "vgg_face" => (16, false),
                v => (v[3..5].parse::<usize>().unwrap(), v.ends_with("_bn")),
            };
            self::vgg(&mut b, depth, bn)?
        }
    };
    b.finish(out)
}

fn alexnet(b: &mut Builder) -> Result<NodeId> {
    let mut x = 0;
    // (index, kernel, stride, padding) of the five convs; max pools after 0, 3 and 10.
    for (i, s, p, pool) in [
        (0, 4, 2, true),
        (3, 1, 2, true),
        (6, 1, 1, false),
        (8, 1, 1, false),
        (10, 1, 1, true),
    ] {
        x = b.conv(&format!("features.{i}"), x, s, [p; 4], 1)?;
        x = b.op(&format!("features.{}", i + 1), Op::Relu, vec![x]);
        if pool {
            x = b.max_pool(&format!("features.{}", i + 2), x, 3, 2, false);
        }
    }
    x = b.adaptive_avg_pool("avgpool", x, 6)?;
    x = b.op("flatten", Op::Flatten, vec![x]);
    x = b.op("classifier.0", Op::Dropout, vec![x]);
    x = b.linear("classifier.1", x)?;
    x = b.op("classifier.2", Op::Relu, vec![x]);
    x = b.op("classifier.3", Op::Dropout, vec![x]);
    x = b.linear("classifier.4", x)?;
    x = b.op("classifier.5", Op::Relu, vec![x]);
    b.linear("classifier.6", x)
}

fn vgg(b: &mut Builder, depth: usize, bn: bool) -> Result<NodeId> {
    // Convs per stage, each stage closed by a 2x2 max pool.
    let stages: &[usize] = match depth {
        11 => &[1, 1, 2, 2, 2],
        13 => &[2, 2, 2, 2, 2],
        16 => &[2, 2, 3, 3, 3],
        19 => &[2, 2, 4, 4, 4],
        _ => unreachable!("checked by defaults()"),
    };
    let mut x = 0;
    let mut i = 0;
    for &convs in stages {
        for _ in 0..convs {
            x = b.conv(&format!("features.{i}"), x, 1, [1; 4], 1)?;
            i += 1;
            if bn {
                x = b.bn(&format!("features.{i}"), x, 1e-5)?;
                i += 1;
            }
            x = b.op(&format!("features.{i}"), Op::Relu, vec![x]);
            i += 1;
        }
        x = b.max_pool(&format!("features.{i}"), x, 2, 2, false);
        i += 1;
    }
    x = b.adaptive_avg_pool("avgpool", x, 7)?;
    x = b.op("flatten", Op::Flatten, vec![x]);
    x = b.linear("classifier.0", x)?;
    x = b.op("classifier.1", Op::Relu, vec![x]);
    x = b.op("classifier.2", Op::Dropout, vec![x]);
    x = b.linear("classifier.3", x)?;
    x = b.op("classifier.4", Op::Relu, vec![x]);
    x = b.op("classifier.5", Op::Dropout, vec![x]);
    b.linear("classifier.6", x)
}

/// TF "SAME" padding for a `k x k`, stride-`s` conv on an `h x w` map:
/// `[top, left, bottom, right]`, the odd pixel going bottom/right.
fn same_padding(h: usize, w: usize, k: usize, s: usize) -> [usize; 4] {
    let total = |n: usize| ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
    let (th, tw) = (total(h), total(w));
    [th / 2, tw / 2, th - th / 2, tw - tw / 2]
}

fn efficientnet_lite0(b: &mut Builder) -> Result<NodeId> {
    const EPS: f32 = 1e-3;
    let relu6 = Op::Clip { min: 0.0, max: 6.0 };
    // Strides of the 16 MBConv blocks of EfficientNet-Lite0 (stages of 1, 2, 2, 3, 3, 4, 1
    // blocks; the first block of stages 2, 3, 4 and 6 has stride 2).
    const STRIDES: [usize; 16] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1];
    let conv_same =
        |b: &mut Builder, name: &str, x: NodeId, s: usize, groups: usize| -> Result<NodeId> {
            let k =
                b.w.get(&format!("{name}.weight"))
                    .map(|t| t.shape().get(2).copied().unwrap_or(1))
                    .unwrap_or(1);
            let shape = b.shape(x)?;
            b.conv(name, x, s, same_padding(shape[2], shape[3], k, s), groups)
        };
    let mut x = conv_same(b, "_conv_stem", 0, 2, 1)?;
    x = b.bn("_bn0", x, EPS)?;
    x = b.op("_swish.stem", relu6.clone(), vec![x]);
    for (i, &stride) in STRIDES.iter().enumerate() {
        let p = format!("_blocks.{i}");
        let input = x;
        let mut h = x;
        if b.has(&format!("{p}._expand_conv.weight")) {
            h = conv_same(b, &format!("{p}._expand_conv"), h, 1, 1)?;
            h = b.bn(&format!("{p}._bn0"), h, EPS)?;
            h = b.op(&format!("{p}._swish.expand"), relu6.clone(), vec![h]);
        }
        let channels = b.shape(h)?[1];
        h = conv_same(b, &format!("{p}._depthwise_conv"), h, stride, channels)?;
        h = b.bn(&format!("{p}._bn1"), h, EPS)?;
        h = b.op(&format!("{p}._swish.depthwise"), relu6.clone(), vec![h]);
        h = conv_same(b, &format!("{p}._project_conv"), h, 1, 1)?;
        h = b.bn(&format!("{p}._bn2"), h, EPS)?;
        if stride == 1 && b.shape(input)? == b.shape(h)? {
            h = b.op(&format!("{p}.add"), Op::Add, vec![h, input]);
        }
        x = h;
    }
    x = conv_same(b, "_conv_head", x, 1, 1)?;
    x = b.bn("_bn1", x, EPS)?;
    x = b.op("_swish.head", relu6, vec![x]);
    x = b.op("_avg_pooling", Op::GlobalAvgPool, vec![x]);
    x = b.op("flatten", Op::Flatten, vec![x]);
    x = b.op("_dropout", Op::Dropout, vec![x]);
    b.linear("_fc", x)
}

/// torchvision's ResNet (v1.5: a bottleneck's stride is on its 3 x 3 convolution), ResNeXt and
/// wide ResNet, as `torchvision.models.resnet` names the state dict.
fn resnet(b: &mut Builder, blocks: [usize; 4], bottleneck: bool) -> Result<NodeId> {
    const EPS: f32 = 1e-5;
    let mut x = b.stem(["conv1", "bn1", "relu", "maxpool"], EPS)?;
    for (l, &n) in blocks.iter().enumerate() {
        let layer = format!("layer{}", l + 1);
        if b.has(&format!("{layer}.{n}.conv1.weight"))
            || !b.has(&format!("{layer}.{}.conv1.weight", n - 1))
        {
            return Err(Error::input(format!(
                "{}: arch `{}` has {n} blocks in `{layer}`, the weights do not",
                b.source, b.arch
            ))
            .with_help("check `arch` (resnet18/34 have basic blocks 2-2-2-2 / 3-4-6-3; resnet50/101/152 bottlenecks 3-4-6-3 / 3-4-23-3 / 3-8-36-3)"));
        }
        for i in 0..n {
            let p = format!("{layer}.{i}");
            let stride = if i == 0 && l > 0 { 2 } else { 1 };
            let input = x;
            let mut h;
            if bottleneck {
                h = b.conv(&format!("{p}.conv1"), x, 1, [0; 4], 1)?;
                h = b.bn(&format!("{p}.bn1"), h, EPS)?;
                h = b.op(&format!("{p}.relu1"), Op::Relu, vec![h]);
                // ResNeXt: groups = the 3 x 3 convolution's input width / its weight's.
                let width = b.shape(h)?[1];
                let per_group =
                    b.w.get(&format!("{p}.conv2.weight"))
                        .and_then(|t| t.shape().get(1).copied())
                        .unwrap_or(width)
                        .max(1);
                h = b.conv(&format!("{p}.conv2"), h, stride, [1; 4], width / per_group)?;
                h = b.bn(&format!("{p}.bn2"), h, EPS)?;
                h = b.op(&format!("{p}.relu2"), Op::Relu, vec![h]);
                h = b.conv(&format!("{p}.conv3"), h, 1, [0; 4], 1)?;
                h = b.bn(&format!("{p}.bn3"), h, EPS)?;
            } else {
                h = b.conv(&format!("{p}.conv1"), x, stride, [1; 4], 1)?;
                h = b.bn(&format!("{p}.bn1"), h, EPS)?;
                h = b.op(&format!("{p}.relu1"), Op::Relu, vec![h]);
                h = b.conv(&format!("{p}.conv2"), h, 1, [1; 4], 1)?;
                h = b.bn(&format!("{p}.bn2"), h, EPS)?;
            }
            let identity = if b.has(&format!("{p}.downsample.0.weight")) {
                let d = b.conv(&format!("{p}.downsample.0"), input, stride, [0; 4], 1)?;
                b.bn(&format!("{p}.downsample.1"), d, EPS)?
            } else {
                input
            };
            h = b.op(&format!("{p}.add"), Op::Add, vec![h, identity]);
            b.shape(h)?;
            x = b.op(&format!("{p}.relu"), Op::Relu, vec![h]);
        }
    }
    x = b.op("avgpool", Op::GlobalAvgPool, vec![x]);
    x = b.op("flatten", Op::Flatten, vec![x]);
    b.linear("fc", x)
}

/// torchvision's DenseNet (`torchvision.models.densenet`): every dense layer reads the
/// concatenation of its block's input and the layers before it (BN, ReLU, 1 x 1 conv, BN, ReLU,
/// 3 x 3 conv), transitions halve the size (BN, ReLU, 1 x 1 conv, 2 x 2 average pool), and
/// the classifier reads the global average of ReLU(norm5).
fn densenet(b: &mut Builder, blocks: [usize; 4]) -> Result<NodeId> {
    const EPS: f32 = 1e-5;
    let mut x = b.stem(
        [
            "features.conv0",
            "features.norm0",
            "features.relu0",
            "features.pool0",
        ],
        EPS,
    )?;
    for (k, &n) in blocks.iter().enumerate() {
        let block = format!("features.denseblock{}", k + 1);
        if b.has(&format!("{block}.denselayer{}.conv1.weight", n + 1))
            || !b.has(&format!("{block}.denselayer{n}.conv1.weight"))
        {
            return Err(Error::input(format!(
                "{}: arch `{}` has {n} layers in `{block}`, the weights do not",
                b.source, b.arch
            ))
            .with_help("check `arch` (densenet121/161/169/201 have 6-12-24-16 / 6-12-36-24 / 6-12-32-32 / 6-12-48-32 layers)"));
        }
        let mut features = vec![x];
        for j in 1..=n {
            let p = format!("{block}.denselayer{j}");
            let input = if features.len() == 1 {
                features[0]
            } else {
                b.op(
                    &format!("{p}.cat"),
                    Op::Concat { axis: 1 },
                    features.clone(),
                )
            };
            let mut h = b.bn(&format!("{p}.norm1"), input, EPS)?;
            h = b.op(&format!("{p}.relu1"), Op::Relu, vec![h]);
            h = b.conv(&format!("{p}.conv1"), h, 1, [0; 4], 1)?;
            h = b.bn(&format!("{p}.norm2"), h, EPS)?;
            h = b.op(&format!("{p}.relu2"), Op::Relu, vec![h]);
            h = b.conv(&format!("{p}.conv2"), h, 1, [1; 4], 1)?;
            features.push(h);
        }
        x = b.op(&format!("{block}.cat"), Op::Concat { axis: 1 }, features);
        b.shape(x)?;
        if k < 3 {
            let t = format!("features.transition{}", k + 1);
            x = b.bn(&format!("{t}.norm"), x, EPS)?;
            x = b.op(&format!("{t}.relu"), Op::Relu, vec![x]);
            x = b.conv(&format!("{t}.conv"), x, 1, [0; 4], 1)?;
            x = b.op(
                &format!("{t}.pool"),
                Op::AvgPool {
                    kernel: [2, 2],
                    stride: [2, 2],
                    padding: [0; 4],
                    ceil_mode: false,
                    count_include_pad: true,
                },
                vec![x],
            );
        }
    }
    x = b.bn("features.norm5", x, EPS)?;
    x = b.op("relu", Op::Relu, vec![x]);
    x = b.op("avgpool", Op::GlobalAvgPool, vec![x]);
    x = b.op("flatten", Op::Flatten, vec![x]);
    b.linear("classifier", x)
}

fn onet(b: &mut Builder) -> Result<NodeId> {
    let prelu = |b: &mut Builder, name: &str, x: NodeId| -> Result<NodeId> {
        let slope = b.take(&format!("{name}.weight"))?;
        let id = b.add(name, Op::PRelu, vec![x], vec![("slope", slope)]);
        b.shape(id)?;
        Ok(id)
    };
    let mut x = b.conv("conv1", 0, 1, [0; 4], 1)?;
    x = prelu(b, "prelu1", x)?;
    x = b.max_pool("pool1", x, 3, 2, true);
    x = b.conv("conv2", x, 1, [0; 4], 1)?;
    x = prelu(b, "prelu2", x)?;
    x = b.max_pool("pool2", x, 3, 2, true);
    x = b.conv("conv3", x, 1, [0; 4], 1)?;
    x = prelu(b, "prelu3", x)?;
    x = b.max_pool("pool3", x, 2, 2, true);
    x = b.conv("conv4", x, 1, [0; 4], 1)?;
    x = prelu(b, "prelu4", x)?;
    // facenet-pytorch flattens after permute(0, 3, 2, 1), i.e. in (w, h, c) order. The IR
    // flattens in (c, h, w) order, so dense5's input columns are reordered to match:
    // W'[:, c*H*W + h*W + w] = W[:, w*H*C + h*C + c].
    let s = b.shape(x)?;
    let (c, h, w) = (s[1], s[2], s[3]);
    x = b.op("flatten", Op::Flatten, vec![x]);
    let dense5 = b.take("dense5.weight")?;
    if dense5.shape().len() != 2 || dense5.shape()[1] != c * h * w {
        return Err(Error::input(format!(
            "{}: `dense5.weight` has shape {:?}, expected [256, {}]",
            b.source,
            dense5.shape(),
            c * h * w
        )));
    }
    let out = dense5.shape()[0];
    let src = dense5.data();
    let mut reordered = vec![0f32; src.len()];
    for o in 0..out {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    reordered[o * c * h * w + ci * h * w + hi * w + wi] =
                        src[o * c * h * w + wi * h * c + hi * c + ci];
                }
            }
        }
    }
    let bias = b.take("dense5.bias")?;
    x = b.add(
        "dense5",
        Op::Linear,
        vec![x],
        vec![
            ("weight", Tensor::new(vec![out, c * h * w], reordered)?),
            ("bias", bias),
        ],
    );
    b.shape(x)?;
    x = prelu(b, "prelu5", x)?;
    let face = b.linear("dense6_1", x)?;
    // The box and landmark heads are part of the graph (trace computes them); the face
    // logits are the output that relevance explains.
    b.linear("dense6_2", x)?;
    b.linear("dense6_3", x)?;
    Ok(face)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224, k3, s2: out 112, total = (112 - 1) * 2 + 3 - 224 = 1 -> [0, 0, 1, 1].
        assert_eq!(same_padding(224, 224, 3, 2), [0, 0, 1, 1]);
        // 112, k3, s1: total 2 -> [1, 1, 1, 1]; 28, k5, s2: (14 - 1) * 2 + 5 - 28 = 3 -> [1, 1, 2, 2].
        assert_eq!(same_padding(112, 112, 3, 1), [1, 1, 1, 1]);
        assert_eq!(same_padding(28, 28, 5, 2), [1, 1, 2, 2]);
        assert_eq!(same_padding(7, 7, 1, 1), [0, 0, 0, 0]);
    }

    #[test]
    fn arch_names_are_canonicalised() {
        assert_eq!(canonical("VGG16-BN"), "vgg16_bn");
        assert_eq!(canonical("efficientnet-lite0"), "efficientnet_lite0");
        assert!(defaults("vgg_face").is_some() && defaults("inception_v3").is_none());
        // Every name in ARCHS has its defaults, and the ResNet family its layout.
        assert!(ARCHS.iter().all(|a| defaults(a).is_some()));
        assert_eq!(resnet_layout("resnet152"), Some(([3, 8, 36, 3], true)));
        assert_eq!(resnet_layout("resnet34"), Some(([3, 4, 6, 3], false)));
        assert_eq!(densenet_layout("densenet201"), Some([6, 12, 48, 32]));
    }

    #[test]
    fn densenet_keys_of_pretrained_files_are_renamed() {
        let t = Tensor::new(vec![1], vec![1.0]).unwrap();
        let w: Weights = [
            "features.denseblock1.denselayer1.norm.1.weight",
            "features.denseblock1.denselayer1.conv.2.weight",
            "features.denseblock1.denselayer1.norm2.bias",
            "features.transition1.norm.weight",
        ]
        .iter()
        .map(|k| (k.to_string(), t.clone()))
        .collect();
        let keys: Vec<String> = densenet_keys(&w).into_keys().collect();
        assert_eq!(
            keys,
            [
                "features.denseblock1.denselayer1.conv2.weight",
                "features.denseblock1.denselayer1.norm1.weight",
                "features.denseblock1.denselayer1.norm2.bias",
                "features.transition1.norm.weight",
            ]
        );
    }
}
