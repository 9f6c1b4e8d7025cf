//! Composites: presets that map layer kinds to rules, named as in Zennit
//! (`zennit.composites`), plus `srp`, the rule set of the paper's own code.
//!
//! | composite | first layer | other convs | dense | activations | avg pooling | batch norm |
//! |---|---|---|---|---|---|---|
//! | `epsilon` | epsilon | epsilon | epsilon | gradient | gradient | gradient |
//! | `epsilon-plus-flat` | flat | z+ | epsilon | pass | norm | pass |
//! | `epsilon-alpha2-beta1-flat` | flat | alpha2-beta1 | epsilon | pass | norm | pass |
//! | `epsilon-gamma-box` | z^B | gamma | epsilon | pass | norm | pass |
//! | `srp` | LRP-0 (+1e-9) | LRP-0 (+1e-9) | z+ on W+, no bias | pass | gradient | pass |
//!
//! Max pooling is winner-take-all everywhere (`max_pool` chooses how ties are shared).
//! BatchNorm is merged into the conv before it by the canonizer unless `canonize = false`.

use crate::rules::{Rule, STABILIZER};
use sr_core::propagate::{ActivationMode, PoolMode};
use sr_core::{Error, Result};

/// Every composite name.
pub const COMPOSITES: &[&str] = &[
    "epsilon",
    "epsilon-plus-flat",
    "epsilon-alpha2-beta1-flat",
    "epsilon-gamma-box",
    "srp",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Composite {
    pub first: Option<Rule>,
    pub conv: Rule,
    pub linear: Rule,
    pub batch_norm: Rule,
    pub activation: ActivationMode,
    pub avg_pool: PoolMode,
}

impl Composite {
    pub fn named(
        name: &str,
        epsilon: f32,
        gamma: f32,
        bounds: &(Vec<f32>, Vec<f32>),
    ) -> Result<Composite> {
        let eps = Rule::epsilon(epsilon)?;
        let preset = |first: Rule, conv: Rule| Composite {
            first: Some(first),
            conv,
            linear: eps.clone(),
            batch_norm: Rule::Pass,
            activation: ActivationMode::Pass,
            avg_pool: PoolMode::Norm {
                epsilon: STABILIZER,
            },
        };
        let c = match name.replace('_', "-").as_str() {
            "epsilon" => Composite {
                first: None,
                conv: eps.clone(),
                linear: eps.clone(),
                batch_norm: Rule::Gradient,
                activation: ActivationMode::Gradient,
                avg_pool: PoolMode::Gradient,
            },
            "epsilon-plus-flat" => preset(Rule::Flat, Rule::ZPlus),
            "epsilon-alpha2-beta1-flat" => preset(Rule::Flat, Rule::alpha_beta(2.0, 1.0)?),
            "epsilon-gamma-box" => preset(
                Rule::ZBox {
                    low: bounds.0.clone(),
                    high: bounds.1.clone(),
                },
                Rule::gamma(gamma)?,
            ),
            "srp" => Composite {
                first: None,
                conv: Rule::SrpConv,
                linear: Rule::SrpLinear,
                batch_norm: Rule::Pass,
                activation: ActivationMode::Pass,
                avg_pool: PoolMode::Gradient,
            },
            other => {
                return Err(Error::params(format!("unknown composite `{other}`"))
                    .with_help(format!("composites: {}", COMPOSITES.join(", "))))
            }
        };
        Ok(c)
    }

    /// The rule for a layer of `kind` (`conv`, `linear`, `batch_norm`).
    pub fn rule_for(&self, kind: &str, is_first: bool) -> Rule {
        if is_first && kind != "batch_norm" {
            if let Some(f) = &self.first {
                return f.clone();
            }
        }
        match kind {
            "conv" => self.conv.clone(),
            "linear" => self.linear.clone(),
            _ => self.batch_norm.clone(),
        }
    }
}
