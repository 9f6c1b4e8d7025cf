//! Model-parameter randomization (Adebayo et al., NeurIPS 2018) and its smooth and efficient
//! variants (Hedström et al. 2023), as a run's `[metrics] randomization` and Python's
//! `Model.randomization` both do it: the randomized models step by step, each relevance map
//! (averaged over noisy inputs for the smooth MPRT) and the efficient MPRT's entropy rise.

use crate::spec::Randomization;
use sr_core::sr::{relevance_to_image, RelevanceInput};
use sr_core::{catch_panic, contract, metrics, Error, ImageId, Request, Result, Tensor};
use std::sync::Arc;

/// How to randomize: the `[metrics]` keys.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub order: Randomization,
    /// Groups of layers, top down (0: every layer a step).
    pub steps: usize,
    pub seed: u64,
    /// The smooth MPRT's passes per map (1: the plain MPRT) and its noise, a share of the
    /// input's range.
    pub samples: usize,
    pub noise: f64,
}

/// A model's randomization steps: its graph, and per step the learned layers it randomizes.
pub struct Steps {
    graph: sr_core::Graph,
    info: sr_core::ModelInfo,
    groups: Vec<Vec<usize>>,
    params: Params,
}

impl Steps {
    pub fn of(model: &dyn sr_core::Model, params: Params) -> Result<Self> {
        use sr_nn::randomize;
        let graph = model.graph()?;
        let info = model.info();
        let groups = randomize::steps(&randomize::layers_top_down(&graph), params.steps);
        if groups.is_empty() {
            return Err(Error::unsupported(format!(
                "`metrics.randomization`: the model `{}` has no layer with learned weights to randomize",
                info.name
            )));
        }
        Ok(Steps {
            graph,
            info,
            groups,
            params,
        })
    }

    /// How many steps there are (at least one: [`Steps::of`] refuses a model without learned
    /// layers).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The names of each step's layers, top first.
    pub fn names(&self) -> Vec<Vec<String>> {
        self.groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&i| self.graph.nodes[i].name.clone())
                    .collect()
            })
            .collect()
    }

    /// Whether step `k` leaves every learned layer randomized (the last cascading step).
    pub fn is_full(&self, k: usize) -> bool {
        self.params.order == Randomization::Cascading && k + 1 == self.groups.len()
    }

    /// The model of step `k`: cascading, the groups up to `k` randomized; independent, group
    /// `k` alone.
    pub fn model(&self, k: usize) -> Result<Arc<dyn sr_core::Model>> {
        use sr_nn::randomize;
        let nodes: Vec<usize> = match self.params.order {
            Randomization::Cascading => self.groups[..=k].concat(),
            _ => self.groups[k].clone(),
        };
        let what = format!("randomization step {} of {}", k + 1, self.groups.len());
        Ok(Arc::new(
            randomize::GraphModel::new(
                self.info.clone(),
                randomize::randomized(&self.graph, &nodes, self.params.seed)?,
            )
            .map_err(|e| e.context(&what))?,
        ))
    }
}

/// A map as row-major `f64` values with its height and width.
pub type Plane = (Vec<f64>, usize, usize);

/// The |R| image (summed over channels, min-maxed) of a relevance tensor.
pub fn abs_image(r: &Tensor) -> Result<Plane> {
    let im = relevance_to_image(r, RelevanceInput::AbsSum)?;
    Ok((
        im.data().iter().map(|&v| f64::from(v)).collect(),
        im.height,
        im.width,
    ))
}

/// Relevance passes on one input: plain, and averaged over the smooth MPRT's noisy copies.
pub struct Passes<'a> {
    input: &'a Tensor,
    images: &'a [ImageId],
    samples: usize,
    sigma: f64,
    seed: u64,
}

impl<'a> Passes<'a> {
    /// `input` is one image (`1 x C x H x W`), as normalised for the model.
    pub fn new(input: &'a Tensor, images: &'a [ImageId], params: &Params) -> Self {
        let (lo, hi) = input
            .data()
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        Passes {
            input,
            images,
            samples: params.samples.max(1),
            sigma: params.noise * f64::from(hi - lo),
            seed: params.seed,
        }
    }

    /// The relevance of `target` on the input (checked), and with the smooth MPRT the |R|
    /// image of the mean over `samples` passes: the first on the input, sample `s` on the input
    /// plus seeded Gaussian noise (the same noise for every model).
    pub fn explain(
        &self,
        ex: &dyn sr_core::Explainer,
        target: usize,
        what: &str,
    ) -> Result<(Tensor, Option<Plane>)> {
        let pass = |x: &Tensor| -> Result<Tensor> {
            let e = catch_panic("the relevance method", || {
                ex.explain(&Request {
                    input: x,
                    targets: &[target],
                    logits: None,
                    images: self.images,
                })
            })
            .map_err(|e| e.context(what))?;
            contract::explanation(&e, self.input.shape(), &[target], what)?;
            Ok(e.relevance)
        };
        let plain = pass(self.input)?;
        if self.samples == 1 {
            return Ok((plain, None));
        }
        let data = self.input.data();
        let mut sum: Vec<f64> = plain.data().iter().map(|&v| f64::from(v)).collect();
        for s in 1..self.samples {
            let g = metrics::gaussian(
                data.len(),
                self.seed ^ (s as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            let x = data
                .iter()
                .zip(&g)
                .map(|(x, e)| x + (e * self.sigma) as f32)
                .collect();
            let r = pass(&Tensor::new(self.input.shape().to_vec(), x)?)?;
            for (a, b) in sum.iter_mut().zip(r.data()) {
                *a += f64::from(*b);
            }
        }
        let n = self.samples as f64;
        let mean = Tensor::new(
            plain.shape().to_vec(),
            sum.iter().map(|v| (v / n) as f32).collect(),
        )?;
        Ok((plain, Some(abs_image(&mean)?)))
    }
}

/// The efficient MPRT's complexity: Quantus's discrete entropy in its default 100 bins.
pub const ENTROPY_BINS: usize = 100;

/// The efficient MPRT: the relative rise of the discrete entropy from the trained model's map
/// to the fully randomized model's, `(H_random - H_trained) / H_trained`; `None` when the
/// trained map's entropy is 0 or a value is not finite.
pub fn entropy_rise(trained: &[f64], random: &[f64]) -> Option<f64> {
    let (t, r) = (
        metrics::saliency::discrete_entropy(trained, ENTROPY_BINS),
        metrics::saliency::discrete_entropy(random, ENTROPY_BINS),
    );
    let v = (r - t) / t;
    (t > 0.0 && v.is_finite()).then_some(v)
}
