// This crate has no `dynamic` feature: export_plugin! registers the stage as a built-in only.
#![allow(unexpected_cfgs)]

//! Native stages through the ABI adapters and back, in one process: what a `.so` plugin and
//! the host do on either side of the boundary. A relevance method binds to a shared model it
//! can query, and its explainer keeps it; panics become errors; built-ins are found through
//! `inventory`.

use sr_core::ffi::{export_relevance, export_saliency, RelevanceImport, SaliencyImport};
use sr_core::*;

/// y = w . x with w = [0.5, -1, 2]: a one-layer linear model.
struct Dot;

impl Model for Dot {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "dot".into(),
            input_shape: vec![3, 1, 1],
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            resize: 0,
            labels: vec!["y".into()],
        }
    }
    fn graph(&self) -> Result<Graph> {
        Ok(Graph {
            nodes: vec![
                Node {
                    name: "input".into(),
                    op: Op::Input {
                        shape: vec![3, 1, 1],
                    },
                    inputs: vec![],
                    params: vec![],
                },
                Node {
                    name: "fc".into(),
                    op: Op::Linear,
                    inputs: vec![0],
                    params: vec![(
                        "weight".into(),
                        Tensor::new(vec![1, 3], vec![0.5, -1.0, 2.0])?,
                    )],
                },
            ],
            output: 1,
        })
    }
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let w = [0.5, -1.0, 2.0];
        let y = input
            .data()
            .chunks(3)
            .map(|x| x.iter().zip(w).map(|(a, b)| a * b).sum())
            .collect();
        Tensor::new(vec![input.shape()[0], 1], y)
    }
    fn trace(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![input.clone(), self.forward(input)?])
    }
}

/// Gradient x input for a linear layer read from the model's graph when it binds: R_i = w_i x_i.
struct WeightTimesInput;

impl Relevance for WeightTimesInput {
    fn bind(&self, model: std::sync::Arc<dyn Model>) -> Result<Box<dyn Explainer>> {
        let g = model.graph()?;
        let w = g.nodes[1].param("weight").unwrap().data().to_vec();
        Ok(Box::new(Bound { model, w }))
    }
}

struct Bound {
    model: std::sync::Arc<dyn Model>,
    w: Vec<f32>,
}

impl Explainer for Bound {
    fn explain(&self, req: &Request<'_>) -> Result<Explanation> {
        let (input, targets) = (req.input, req.targets);
        let r: Vec<f32> = input
            .data()
            .iter()
            .zip(&self.w)
            .map(|(x, w)| x * w)
            .collect();
        let score = self.model.forward(input)?.data()[targets[0]] as f64;
        let sum = r.iter().map(|&v| v as f64).sum();
        Ok(Explanation {
            relevance: Tensor::new(input.shape().to_vec(), r)?,
            stats: vec![RelevanceStats {
                target: targets[0],
                relevance_sum: sum,
                target_score: score,
            }],
        })
    }
}

#[test]
fn a_relevance_stage_binds_to_a_shared_model_across_the_abi() {
    let exported = export_relevance("relevance.wxi".into(), Box::new(WeightTimesInput));
    let imported = RelevanceImport(exported);
    let model: std::sync::Arc<dyn Model> = std::sync::Arc::new(Dot);
    let explainer = imported.bind(model.clone()).unwrap();
    // The explainer holds the model (shared, not copied), and keeps it after the host lets go.
    assert_eq!(std::sync::Arc::strong_count(&model), 2);
    drop(model);
    let x = Tensor::new(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]).unwrap();
    let e = explainer.explain(&Request::new(&x, &[0])).unwrap();
    // Hand-derived: R = [0.5, -2, 6], sum 4.5 = y.
    assert_eq!(e.relevance.data(), &[0.5, -2.0, 6.0]);
    assert_eq!(e.relevance.shape(), &[1, 3, 1, 1]);
    assert_eq!(
        e.stats,
        vec![RelevanceStats {
            target: 0,
            relevance_sum: 4.5,
            target_score: 4.5
        }]
    );
}

struct Boom;
impl Saliency for Boom {
    fn saliency(&self, _: &Image) -> Result<Image> {
        panic!("boom at pixel 3")
    }
}

#[test]
fn a_panic_inside_an_exported_stage_becomes_a_panic_error() {
    let s = SaliencyImport(export_saliency("saliency.boom".into(), Box::new(Boom)));
    let img = Image::new(2, 2, 3, vec![0.0; 12]).unwrap();
    let e = s.saliency(&img).unwrap_err();
    assert_eq!(e.code, ErrorCode::Panic);
    assert_eq!(e.message, "saliency.boom panicked: boom at pixel 3");
}

/// A saliency stage that returns the mean of the channels.
struct Mean;
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MeanParams {
    gain: f32,
}
impl Params for MeanParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[("gain", "multiplies the mean")];
}
impl SaliencyStage for Mean {
    type Params = MeanParams;
    fn build(p: MeanParams) -> Result<Self> {
        if p.gain < 0.0 {
            return Err(Error::params("`gain` must be >= 0"));
        }
        Ok(Mean)
    }
}
impl Saliency for Mean {
    fn saliency(&self, i: &Image) -> Result<Image> {
        let m = i
            .data()
            .chunks(i.channels)
            .map(|p| p.iter().sum::<f32>() / p.len() as f32)
            .collect();
        Image::new(i.width, i.height, 1, m)
    }
}

sr_core::export_plugin! {
    name: "test-builtins",
    version: "0.0.0",
    stages: [StageDef::saliency::<Mean>("mean", "0.0.0", "Mean of the channels.")],
}

#[test]
fn built_in_stages_are_registered_with_their_parameters() {
    let reg = Registry::with_builtins();
    let e = reg
        .get(StageKind::Saliency, "mean")
        .expect("registered through inventory");
    assert_eq!(e.info.key(), "saliency.mean");
    assert_eq!(
        e.source,
        StageSource::Builtin {
            plugin: "test-builtins".into()
        }
    );
    assert_eq!(e.info.params[0].key, "gain");
    assert_eq!(e.info.params[0].default_toml.as_deref(), Some("0.0"));
    let s = reg.create_saliency("mean", "gain = 2.0").unwrap();
    let out = s
        .saliency(&Image::new(1, 1, 3, vec![0.0, 0.3, 0.6]).unwrap())
        .unwrap();
    assert!((out.data()[0] - 0.3).abs() < 1e-6);
    // Parameters are checked by the stage; errors name the stage.
    let err = reg.create_saliency("mean", "gain = -1.0").err().unwrap();
    assert_eq!(err.message, "stage `saliency.mean`: `gain` must be >= 0");
    let err = reg.create_saliency("mean", "gian = 1.0").err().unwrap();
    assert!(err.message.contains("unknown field `gian`"), "{err}");
    assert_eq!(err.help, "known keys: gain");
    let err = reg.create_saliency("median", "").err().unwrap();
    assert_eq!(err.message, "unknown saliency stage `median`");
    assert!(
        err.help.contains("known saliency stages: mean"),
        "{}",
        err.help
    );
}
