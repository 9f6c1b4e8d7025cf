//! Canonizers: rewrite a model into an equivalent one that LRP rules handle well.
//!
//! [`merge_batch_norm`] folds every BatchNorm that directly follows a conv (and is that conv's
//! only consumer) into the conv: with `s = gamma / sqrt(var + eps)`, `W' = W s` (per output
//! channel) and `b' = (b - mean) s + beta`. The logits are unchanged up to float round-off
//! (tested).

use sr_core::graph::batch_norm_affine;
use sr_core::{Error, Graph, Node, Op, Result, Tensor};

/// The graph with BatchNorms merged into the convs before them. Node names are kept; the
/// merged conv keeps its own name.
pub fn merge_batch_norm(g: &Graph) -> Result<Graph> {
    let mut consumers = vec![0usize; g.nodes.len()];
    for n in &g.nodes {
        for &i in &n.inputs {
            consumers[i] += 1;
        }
    }
    // merged[bn] = the conv it folds into
    let mut fold_into: Vec<Option<usize>> = vec![None; g.nodes.len()];
    for (id, n) in g.nodes.iter().enumerate() {
        if let Op::BatchNorm { .. } = n.op {
            let src = n.inputs[0];
            if matches!(g.nodes[src].op, Op::Conv2d { .. }) && consumers[src] == 1 {
                fold_into[id] = Some(src);
            }
        }
    }
    let mut new_nodes: Vec<Node> = Vec::with_capacity(g.nodes.len());
    let mut remap: Vec<usize> = vec![0; g.nodes.len()];
    for (id, n) in g.nodes.iter().enumerate() {
        if let Some(conv) = fold_into[id] {
            let (scale, _) = batch_norm_affine(n)?;
            let p = |k: &str| {
                n.param(k)
                    .map(Tensor::data)
                    .ok_or_else(|| Error::input(format!("layer `{}`: no `{k}`", n.name)))
            };
            let (beta, mean) = (p("bias")?, p("running_mean")?);
            let target = remap[conv];
            let c = &mut new_nodes[target];
            let w = c.param("weight").expect("a conv has weights").clone();
            let per_out = w.numel() / scale.len();
            let w2: Vec<f32> = w
                .data()
                .iter()
                .enumerate()
                .map(|(i, v)| v * scale[i / per_out])
                .collect();
            let b_old: Vec<f32> =
                c.param("bias")
                    .map(|b| b.data().to_vec())
                    .unwrap_or(vec![0.0; scale.len()]);
            let b2: Vec<f32> = (0..scale.len())
                .map(|o| (b_old[o] - mean[o]) * scale[o] + beta[o])
                .collect();
            c.params = vec![
                ("weight".to_string(), Tensor::new(w.shape().to_vec(), w2)?),
                ("bias".to_string(), Tensor::new(vec![scale.len()], b2)?),
            ];
            remap[id] = target;
            continue;
        }
        let mut m = n.clone();
        m.inputs = n.inputs.iter().map(|&i| remap[i]).collect();
        new_nodes.push(m);
        remap[id] = new_nodes.len() - 1;
    }
    let out = Graph {
        nodes: new_nodes,
        output: remap[g.output],
    };
    out.infer_shapes()?;
    Ok(out)
}
