//! The graph IR: shape inference against hand-derived sizes of real architectures, errors
//! that name the layer and both shapes, and a lossless trip through the ABI.

use sr_core::{Graph, Node, Op, Tensor};

fn node(name: &str, op: Op, inputs: Vec<usize>, params: Vec<(&str, Vec<usize>)>) -> Node {
    Node {
        name: name.into(),
        op,
        inputs,
        params: params
            .into_iter()
            .map(|(n, s)| (n.to_string(), Tensor::zeros(s)))
            .collect(),
    }
}

fn conv(
    name: &str,
    input: usize,
    o: usize,
    i: usize,
    k: usize,
    s: usize,
    p: [usize; 4],
    groups: usize,
) -> Node {
    node(
        name,
        Op::Conv2d {
            stride: [s, s],
            padding: p,
            dilation: [1, 1],
            groups,
        },
        vec![input],
        vec![("weight", vec![o, i / groups, k, k]), ("bias", vec![o])],
    )
}

fn maxpool(name: &str, input: usize, k: usize, s: usize, ceil: bool) -> Node {
    node(
        name,
        Op::MaxPool {
            kernel: [k, k],
            stride: [s, s],
            padding: [0; 4],
            ceil_mode: ceil,
        },
        vec![input],
        vec![],
    )
}

/// torchvision AlexNet's feature extractor: 224 -> 55 -> 27 -> 27 -> 13 -> 13 -> 6
/// (conv 11/4 pad 2: floor((224 + 4 - 11) / 4) + 1 = 55; pool 3/2: floor((55 - 3) / 2) + 1 = 27).
#[test]
fn alexnet_feature_shapes() {
    let g = Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![3, 224, 224],
                },
                vec![],
                vec![],
            ),
            conv("features.0", 0, 64, 3, 11, 4, [2; 4], 1),
            node("features.1", Op::Relu, vec![1], vec![]),
            maxpool("features.2", 2, 3, 2, false),
            conv("features.3", 3, 192, 64, 5, 1, [2; 4], 1),
            maxpool("features.5", 4, 3, 2, false),
            conv("features.6", 5, 384, 192, 3, 1, [1; 4], 1),
            conv("features.8", 6, 256, 384, 3, 1, [1; 4], 1),
            conv("features.10", 7, 256, 256, 3, 1, [1; 4], 1),
            maxpool("features.12", 8, 3, 2, false),
            node("flatten", Op::Flatten, vec![9], vec![]),
            node(
                "classifier.1",
                Op::Linear,
                vec![10],
                vec![("weight", vec![4096, 9216]), ("bias", vec![4096])],
            ),
        ],
        output: 11,
    };
    let s = g.infer_shapes().unwrap();
    assert_eq!(s[1], vec![1, 64, 55, 55]);
    assert_eq!(s[3], vec![1, 64, 27, 27]);
    assert_eq!(s[5], vec![1, 192, 13, 13]);
    assert_eq!(s[9], vec![1, 256, 6, 6]);
    assert_eq!(s[10], vec![1, 9216]);
    assert_eq!(s[11], vec![1, 4096]);
}

/// MTCNN ONet: 48 -> conv3 46 -> pool 3/2 ceil 23 (floor would give 22) -> conv3 21 ->
/// pool 3/2 ceil 10 -> conv3 8 -> pool 2/2 ceil 4 -> conv2 3; 128 * 3 * 3 = 1152.
#[test]
fn onet_ceil_mode_pooling() {
    let g = Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![3, 48, 48],
                },
                vec![],
                vec![],
            ),
            conv("conv1", 0, 32, 3, 3, 1, [0; 4], 1),
            node("prelu1", Op::PRelu, vec![1], vec![("slope", vec![32])]),
            maxpool("pool1", 2, 3, 2, true),
            conv("conv2", 3, 64, 32, 3, 1, [0; 4], 1),
            maxpool("pool2", 4, 3, 2, true),
            conv("conv3", 5, 64, 64, 3, 1, [0; 4], 1),
            maxpool("pool3", 6, 2, 2, true),
            conv("conv4", 7, 128, 64, 2, 1, [0; 4], 1),
            node("flatten", Op::Flatten, vec![8], vec![]),
        ],
        output: 9,
    };
    let s = g.infer_shapes().unwrap();
    assert_eq!(s[3], vec![1, 32, 23, 23]);
    assert_eq!(s[5], vec![1, 64, 10, 10]);
    assert_eq!(s[7], vec![1, 64, 4, 4]);
    assert_eq!(s[9], vec![1, 1152]);
    let floor = Graph {
        nodes: vec![
            g.nodes[0].clone(),
            g.nodes[1].clone(),
            maxpool("pool1", 1, 3, 2, false),
        ],
        output: 2,
    };
    assert_eq!(floor.infer_shapes().unwrap()[2], vec![1, 32, 22, 22]);
}

/// EfficientNet's TF-"SAME" stride-2 convs pad asymmetrically: 224 with k3 s2 needs
/// pad_total = max((112 - 1) * 2 + 3 - 224, 0) = 1, all of it at the bottom/right.
/// Depthwise conv: groups = channels.
#[test]
fn asymmetric_padding_depthwise_residual_and_concat() {
    let g = Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![3, 224, 224],
                },
                vec![],
                vec![],
            ),
            conv("stem", 0, 32, 3, 3, 2, [0, 0, 1, 1], 1),
            conv("dw", 1, 32, 32, 3, 1, [1; 4], 32),
            node("add", Op::Add, vec![1, 2], vec![]),
            node("cat", Op::Concat { axis: 1 }, vec![1, 3], vec![]),
            node("gap", Op::GlobalAvgPool, vec![4], vec![]),
            node("clip", Op::Clip { min: 0.0, max: 6.0 }, vec![5], vec![]),
        ],
        output: 6,
    };
    let s = g.infer_shapes().unwrap();
    assert_eq!(s[1], vec![1, 32, 112, 112]);
    assert_eq!(s[2], vec![1, 32, 112, 112]);
    assert_eq!(s[4], vec![1, 64, 112, 112]);
    assert_eq!(s[6], vec![1, 64, 1, 1]);
}

#[test]
fn a_wrong_weight_shape_names_the_layer_and_both_shapes() {
    let mut bad = conv("features.3", 1, 192, 64, 5, 1, [2; 4], 1);
    bad.params[0].1 = Tensor::zeros(vec![192, 32, 5, 5]);
    let g = Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![3, 32, 32],
                },
                vec![],
                vec![],
            ),
            conv("features.0", 0, 64, 3, 3, 1, [1; 4], 1),
            bad,
        ],
        output: 2,
    };
    let e = g.infer_shapes().unwrap_err();
    assert_eq!(
        e.message,
        "layer `features.3` (conv2d): parameter `weight` (`features.3.weight`) has shape [192, 32, 5, 5], expected [192, 64, 5, 5]"
    );

    let g = Graph {
        nodes: vec![
            node("input", Op::Input { shape: vec![4] }, vec![], vec![]),
            node(
                "fc",
                Op::Linear,
                vec![0],
                vec![("weight", vec![2, 4]), ("bias", vec![3])],
            ),
        ],
        output: 1,
    };
    assert_eq!(
        g.infer_shapes().unwrap_err().message,
        "layer `fc` (linear): parameter `bias` (`fc.bias`) has shape [3], expected [2]"
    );
}

#[test]
fn structural_errors_are_refused() {
    let input = node(
        "input",
        Op::Input {
            shape: vec![3, 8, 8],
        },
        vec![],
        vec![],
    );
    let forward_ref = Graph {
        nodes: vec![input.clone(), node("r", Op::Relu, vec![1], vec![])],
        output: 1,
    };
    assert!(forward_ref
        .infer_shapes()
        .unwrap_err()
        .message
        .contains("input 1 is not an earlier node"));
    let missing = Graph {
        nodes: vec![input.clone(), node("fc", Op::Linear, vec![0], vec![])],
        output: 1,
    };
    assert!(missing
        .infer_shapes()
        .unwrap_err()
        .message
        .contains("missing parameter `weight`"));
    let lonely_add = Graph {
        nodes: vec![input.clone(), node("a", Op::Add, vec![0], vec![])],
        output: 1,
    };
    assert!(lonely_add
        .infer_shapes()
        .unwrap_err()
        .message
        .contains("expects 2 or more inputs"));
    let bad_out = Graph {
        nodes: vec![input],
        output: 3,
    };
    assert!(bad_out.infer_shapes().is_err());
}

#[test]
fn a_graph_crosses_the_abi_unchanged_and_shares_its_weights() {
    let mut c = conv("c", 0, 4, 3, 3, 1, [0, 1, 1, 0], 1);
    c.params[0].1 = Tensor::new(vec![4, 3, 3, 3], (0..108).map(|i| i as f32).collect()).unwrap();
    let g = Graph {
        nodes: vec![
            node(
                "input",
                Op::Input {
                    shape: vec![3, 8, 8],
                },
                vec![],
                vec![],
            ),
            c,
            node(
                "lrn",
                Op::Lrn {
                    size: 5,
                    alpha: 1e-4,
                    beta: 0.75,
                    bias: 2.0,
                },
                vec![1],
                vec![],
            ),
            node(
                "avg",
                Op::AvgPool {
                    kernel: [2, 2],
                    stride: [2, 2],
                    padding: [0; 4],
                    ceil_mode: true,
                    count_include_pad: false,
                },
                vec![2],
                vec![],
            ),
        ],
        output: 3,
    };
    let ffi = g.to_ffi().unwrap();
    assert_eq!(ffi.nodes[1].op.as_str(), "conv2d");
    let back = Graph::from_ffi(&ffi).unwrap();
    assert_eq!(back, g);
    // Same buffer, not a copy.
    assert!(std::ptr::eq(
        back.nodes[1].params[0].1.data().as_ptr(),
        g.nodes[1].params[0].1.data().as_ptr()
    ));
}

/// The model-zoo ops: shapes (a squeeze-and-excitation gate, a channel shuffle, the two halves
/// of a split, LayerNorm), errors naming the layer, and a lossless trip through the ABI.
#[test]
fn zoo_ops_shapes_errors_and_abi() {
    let input = node(
        "input",
        Op::Input {
            shape: vec![8, 6, 6],
        },
        vec![],
        vec![],
    );
    let g = Graph {
        nodes: vec![
            input.clone(),
            node("gap", Op::GlobalAvgPool, vec![0], vec![]),
            node("gate", Op::Sigmoid, vec![1], vec![]),
            node("se", Op::Mul, vec![0, 2], vec![]),
            node("act", Op::HardSwish, vec![3], vec![]),
            node("shuffle", Op::ChannelShuffle { groups: 2 }, vec![4], vec![]),
            node(
                "left",
                Op::Narrow {
                    start: 0,
                    len: 3,
                    axis: 1,
                    step: 1,
                },
                vec![5],
                vec![],
            ),
            node(
                "right",
                Op::Narrow {
                    start: 3,
                    len: 5,
                    axis: 1,
                    step: 1,
                },
                vec![5],
                vec![],
            ),
            node(
                "ln",
                Op::LayerNorm { eps: 1e-6 },
                vec![7],
                vec![("weight", vec![5]), ("bias", vec![5])],
            ),
            node("gelu", Op::Gelu, vec![8], vec![]),
            node(
                "hs",
                Op::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                vec![6],
                vec![],
            ),
            node("silu", Op::Silu, vec![10], vec![]),
            node("cat", Op::Concat { axis: 1 }, vec![11, 9], vec![]),
        ],
        output: 12,
    };
    let s = g.infer_shapes().unwrap();
    assert_eq!(s[2], vec![1, 8, 1, 1]);
    assert_eq!(s[3], vec![1, 8, 6, 6]);
    assert_eq!((s[6][1], s[7][1], s[12][1]), (3, 5, 8));
    assert_eq!(Graph::from_ffi(&g.to_ffi().unwrap()).unwrap(), g);
    for n in &g.nodes[2..12] {
        let act = matches!(
            n.op,
            Op::Sigmoid | Op::HardSwish | Op::Gelu | Op::HardSigmoid { .. } | Op::Silu
        );
        assert_eq!(n.op.is_activation(), act, "{}", n.name);
    }

    let bad = |n: Node, want: &str| {
        let g = Graph {
            nodes: vec![input.clone(), node("conv", Op::Relu, vec![0], vec![]), n],
            output: 2,
        };
        assert_eq!(g.infer_shapes().unwrap_err().message, want);
    };
    bad(
        node("se", Op::Mul, vec![0], vec![]),
        "layer `se` (mul): expects 2 inputs, has 1",
    );
    let g = Graph {
        nodes: vec![
            input.clone(),
            node("gap", Op::GlobalAvgPool, vec![0], vec![]),
            node("flat", Op::Flatten, vec![1], vec![]),
            node("se", Op::Mul, vec![0, 2], vec![]),
        ],
        output: 3,
    };
    assert_eq!(
        g.infer_shapes().unwrap_err().message,
        "layer `se` (mul): the gate has shape [1, 8]; expected the signal's [1, 8, 6, 6] or one value per channel [1, 8, 1, 1]"
    );
    bad(
        node("shuffle", Op::ChannelShuffle { groups: 3 }, vec![1], vec![]),
        "layer `shuffle` (channel_shuffle): 3 groups do not divide the channels of [1, 8, 6, 6]",
    );
    bad(
        node(
            "half",
            Op::Narrow {
                start: 6,
                len: 4,
                axis: 1,
                step: 1,
            },
            vec![1],
            vec![],
        ),
        "layer `half` (narrow): indices 6..10 of axis 1 are not within [1, 8, 6, 6]",
    );
    bad(
        node(
            "tok",
            Op::Narrow {
                start: 0,
                len: 1,
                axis: 4,
                step: 1,
            },
            vec![1],
            vec![],
        ),
        "layer `tok` (narrow): indices 0..1 of axis 4 are not within [1, 8, 6, 6]",
    );
    bad(
        node(
            "ln",
            Op::LayerNorm { eps: 1e-6 },
            vec![1],
            vec![("weight", vec![6]), ("bias", vec![8])],
        ),
        "layer `ln` (layer_norm): parameter `weight` (`ln.weight`) has shape [6], expected [8]",
    );
}

/// The token-sequence ops of transformers: shapes at batch 1 (the whole tensor), errors that
/// name the layer for a bad permutation, reshape, product or constant, and the graph then
/// runs one image at a time.
#[test]
fn token_ops_shapes_and_errors() {
    let input = node(
        "x",
        Op::Input {
            shape: vec![3, 4, 5],
        },
        vec![],
        vec![],
    );
    let g = Graph {
        nodes: vec![
            input.clone(),
            node(
                "tokens",
                Op::Reshape {
                    shape: vec![1, 3, 20],
                },
                vec![0],
                vec![],
            ),
            node(
                "t",
                Op::Transpose {
                    perm: vec![0, 2, 1],
                },
                vec![1],
                vec![],
            ),
            node("scores", Op::MatMul, vec![1, 2], vec![]),
            node("pos", Op::Constant, vec![0], vec![("value", vec![1, 3, 3])]),
            node("sum", Op::Add, vec![3, 4], vec![]),
            node("half", Op::Scale { factor: 0.5 }, vec![5], vec![]),
            node(
                "first",
                Op::Narrow {
                    start: 0,
                    len: 1,
                    axis: 1,
                    step: 1,
                },
                vec![6],
                vec![],
            ),
        ],
        output: 7,
    };
    assert_eq!(
        g.infer_shapes().unwrap(),
        vec![
            vec![1, 3, 4, 5],
            vec![1, 3, 20],
            vec![1, 20, 3],
            vec![1, 3, 3],
            vec![1, 3, 3],
            vec![1, 3, 3],
            vec![1, 3, 3],
            vec![1, 1, 3],
        ]
    );
    assert!(g.runs_per_sample());
    // Across the plugin ABI and back, attributes and all.
    assert_eq!(Graph::from_ffi(&g.to_ffi().unwrap()).unwrap(), g);
    assert!(!Graph {
        nodes: vec![input.clone(), node("r", Op::Relu, vec![0], vec![])],
        output: 1
    }
    .runs_per_sample());
    let bad = |n: Node, want: &str| {
        let g = Graph {
            nodes: vec![
                input.clone(),
                node(
                    "tokens",
                    Op::Reshape {
                        shape: vec![1, 3, 20],
                    },
                    vec![0],
                    vec![],
                ),
                n,
            ],
            output: 2,
        };
        assert_eq!(g.infer_shapes().unwrap_err().message, want);
    };
    bad(
        node(
            "r",
            Op::Reshape {
                shape: vec![1, 7, 9],
            },
            vec![1],
            vec![],
        ),
        "layer `r` (reshape): cannot reshape [1, 3, 20] to [1, 7, 9]",
    );
    bad(
        node("r", Op::Reshape { shape: vec![] }, vec![1], vec![]),
        "layer `r` (reshape): cannot reshape [1, 3, 20] to []",
    );
    bad(
        node(
            "p",
            Op::Transpose {
                perm: vec![0, 2, 2],
            },
            vec![1],
            vec![],
        ),
        "layer `p` (transpose): perm [0, 2, 2] is not a permutation of the 3 axes of [1, 3, 20]",
    );
    bad(
        node(
            "p",
            Op::Transpose {
                perm: vec![0, 1, 7],
            },
            vec![1],
            vec![],
        ),
        "layer `p` (transpose): perm [0, 1, 7] is not a permutation of the 3 axes of [1, 3, 20]",
    );
    bad(
        node("p", Op::Transpose { perm: vec![1, 0] }, vec![1], vec![]),
        "layer `p` (transpose): perm [1, 0] is not a permutation of the 3 axes of [1, 3, 20]",
    );
    bad(
        node("mm", Op::MatMul, vec![1, 1], vec![]),
        "layer `mm` (mat_mul): cannot multiply [1, 3, 20] by [1, 3, 20] (srhost multiplies [..., m, k] by [..., k, n] with equal leading axes)",
    );
    bad(
        node("mm", Op::MatMul, vec![1], vec![]),
        "layer `mm` (mat_mul): expects 2 inputs, has 1",
    );
    bad(
        node("c", Op::Constant, vec![1], vec![]),
        "layer `c` (constant): missing parameter `value`",
    );
}
