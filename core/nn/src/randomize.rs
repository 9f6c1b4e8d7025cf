//! Model-parameter randomization (Adebayo et al., "Sanity checks for saliency maps", NeurIPS
//! 2018): copies of a model whose learned layers are randomized, from the output down
//! (cascading) or one at a time (independent), to see whether an explanation depends on what
//! the model learned.
//!
//! A layer is a node with a weight of two or more dimensions (convolutions and linear layers);
//! randomizing it permutes the values of its weight and of its bias (seeded, per layer), which
//! keeps each tensor's distribution and destroys what it learned, for any backend whose graph
//! srhost's executor runs (torchvision checkpoints, ONNX models).

use crate::Executor;
use sr_core::{Graph, Model, ModelInfo, Result, Tensor};

/// The learned layers of `g`, top (output side) first: node indices.
pub fn layers_top_down(g: &Graph) -> Vec<usize> {
    let mut v: Vec<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.param("weight").is_some_and(|w| w.shape().len() >= 2))
        .map(|(i, _)| i)
        .collect();
    v.reverse();
    v
}

/// The steps of a randomization: `steps` groups of the top-down layers (as equal as they
/// divide; every layer its own step when `steps` is 0 or at least the number of layers).
pub fn steps(layers: &[usize], steps: usize) -> Vec<Vec<usize>> {
    let n = layers.len();
    let k = if steps == 0 { n } else { steps.min(n) };
    (0..k)
        .map(|s| layers[s * n / k..(s + 1) * n / k].to_vec())
        .collect()
}

/// A seeded permutation of `t`'s values.
fn permuted(t: &Tensor, seed: u64) -> Result<Tensor> {
    let mut v = t.data().to_vec();
    sr_core::metrics::shuffle(&mut v, seed);
    Tensor::new(t.shape().to_vec(), v)
}

/// `g` with the weight and bias of every node in `nodes` permuted; the seed of node `i` is
/// derived from `seed` and `i`, so a layer gets the same values in every step it is randomized.
pub fn randomized(g: &Graph, nodes: &[usize], seed: u64) -> Result<Graph> {
    let mut g = g.clone();
    for &i in nodes {
        let node = &mut g.nodes[i];
        for (k, (name, t)) in node.params.iter_mut().enumerate() {
            if name == "weight" || name == "bias" {
                let s = seed ^ ((i as u64) << 20) ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                *t = permuted(t, s)?;
            }
        }
    }
    Ok(g)
}

/// A model run by srhost's executor on a (randomized) graph, with another model's info.
pub struct GraphModel {
    info: ModelInfo,
    exec: Executor,
}

impl GraphModel {
    pub fn new(info: ModelInfo, graph: Graph) -> Result<Self> {
        Ok(GraphModel {
            info,
            exec: Executor::new(graph)?,
        })
    }
}

impl Model for GraphModel {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sr_core::{Node, Op};

    fn node(name: &str, op: Op, inputs: Vec<usize>, params: Vec<(&str, Tensor)>) -> Node {
        Node {
            name: name.into(),
            op,
            inputs,
            params: params.into_iter().map(|(n, t)| (n.into(), t)).collect(),
        }
    }

    fn net() -> Graph {
        let t = |s: Vec<usize>, v: Vec<f32>| Tensor::new(s, v).unwrap();
        Graph {
            nodes: vec![
                node("input", Op::Input { shape: vec![4] }, vec![], vec![]),
                node(
                    "fc1",
                    Op::Linear,
                    vec![0],
                    vec![("weight", t(vec![3, 4], (0..12).map(|v| v as f32).collect()))],
                ),
                node("relu", Op::Relu, vec![1], vec![]),
                node(
                    "fc2",
                    Op::Linear,
                    vec![2],
                    vec![
                        ("weight", t(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
                        ("bias", t(vec![2], vec![0.5, -0.5])),
                    ],
                ),
            ],
            output: 3,
        }
    }

    #[test]
    fn layers_go_top_down_and_steps_group_them() {
        let g = net();
        assert_eq!(layers_top_down(&g), vec![3, 1]);
        assert_eq!(steps(&[3, 1], 0), vec![vec![3], vec![1]]);
        assert_eq!(steps(&[3, 1], 1), vec![vec![3, 1]]);
        assert_eq!(steps(&[5, 4, 3, 2, 1], 2), vec![vec![5, 4], vec![3, 2, 1]]);
    }

    #[test]
    fn randomizing_permutes_only_the_chosen_layers_and_is_seeded() {
        let g = net();
        let r = randomized(&g, &[3], 7).unwrap();
        // fc1 untouched; fc2's weight and bias hold the same values in another order.
        assert_eq!(r.nodes[1].params, g.nodes[1].params);
        let sorted = |t: &Tensor| {
            let mut v = t.data().to_vec();
            v.sort_by(f32::total_cmp);
            v
        };
        let (w0, w1) = (
            g.nodes[3].param("weight").unwrap(),
            r.nodes[3].param("weight").unwrap(),
        );
        assert_eq!(sorted(w0), sorted(w1));
        assert_ne!(
            w0.data(),
            w1.data(),
            "a permutation of six distinct values moved none"
        );
        assert_eq!(
            r.nodes[3].params,
            randomized(&g, &[3], 7).unwrap().nodes[3].params
        );
        assert_ne!(
            r.nodes[3].params,
            randomized(&g, &[3], 8).unwrap().nodes[3].params
        );
        // The layer gets the same values whether randomized alone or with others.
        assert_eq!(
            randomized(&g, &[3, 1], 7).unwrap().nodes[3].params,
            r.nodes[3].params
        );
    }
}
