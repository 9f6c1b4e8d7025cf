//! The stages of a pipeline, built once from the registry and shared by every image.

use crate::spec::Pipeline;
use sr_core::{Explainer, Model, Registry, Relevance, Renderer, Result, Saliency};
use std::sync::Arc;

/// The stages of a pipeline, built once and shared by every image.
pub struct Stages {
    pub model: Option<Arc<dyn Model>>,
    /// Each relevance branch, bound to the model once.
    pub relevance: Vec<(String, Box<dyn Explainer>)>,
    /// The same methods unbound, for the randomized models (`[metrics] randomization`).
    pub methods: Vec<(String, Box<dyn Relevance>)>,
    pub saliency: Option<Box<dyn Saliency>>,
    /// The renderer of the relevance pictures every relevance branch gets
    /// (`relevance-<branch>.png`, see [`RELEVANCE_PNG`]).
    pub relevance_png: Option<(String, Box<dyn Renderer>)>,
    pub renderers: Vec<(String, Box<dyn Renderer>)>,
}

/// The renderer and parameters of the relevance pictures (`relevance-<branch>.png`, shown by
/// the report): the heatmap renderer with the signed `bwr` colormap scaled to the largest |R|.
pub const RELEVANCE_PNG: (&str, &str) = (
    "heatmap",
    "colormap = \"bwr\"\npercentile = 100.0\nprefix = \"relevance\"\n",
);

/// Build every stage of `p` (loading the model is the heavy part) and bind every relevance
/// branch to the model.
pub fn build_stages(p: &Pipeline, reg: &Registry) -> Result<Stages> {
    let model: Option<Arc<dyn Model>> = match &p.model {
        Some(s) => Some(Arc::from(
            reg.create_model(&s.name, &s.params_toml)
                .map_err(|e| e.context(format!("[{}]", s.table)))?,
        )),
        None => None,
    };
    let mut methods: Vec<(String, Box<dyn Relevance>)> = vec![];
    let mut relevance: Vec<(String, Box<dyn Explainer>)> = vec![];
    // (The spec refuses relevance branches without a model.)
    if let Some(m) = &model {
        for (b, s) in &p.relevance {
            let r = reg
                .create_relevance(&s.name, &s.params_toml)
                .map_err(|e| e.context(format!("[{}]", s.table)))?;
            let e = r
                .bind(m.clone())
                .map_err(|e| e.context(format!("[{}]", s.table)))?;
            relevance.push((b.clone(), e));
            methods.push((b.clone(), r));
        }
    }
    let saliency = match &p.saliency {
        Some(s) => Some(
            reg.create_saliency(&s.name, &s.params_toml)
                .map_err(|e| e.context(format!("[{}]", s.table)))?,
        ),
        None => None,
    };
    let renderers = p
        .renderers
        .iter()
        .map(|s| {
            reg.create_renderer(&s.name, &s.params_toml)
                .map(|r| (s.name.clone(), r))
                .map_err(|e| e.context(format!("[{}]", s.table)))
        })
        .collect::<Result<_>>()?;
    let relevance_png = if relevance.is_empty() {
        None
    } else {
        let (name, params) = RELEVANCE_PNG;
        let r = reg
            .create_renderer(name, params)
            .map_err(|e| e.context("the relevance pictures"))?;
        Some((name.to_string(), r))
    };
    Ok(Stages {
        model,
        relevance,
        methods,
        saliency,
        relevance_png,
        renderers,
    })
}
