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
//! | `attnlrp` | epsilon | epsilon | epsilon | pass (identity) | norm | pass |
//! | `cp-lrp` | epsilon | epsilon | epsilon | pass (identity) | norm | pass |
//!
//! Attention (a constant scale, the product of two computed values, a softmax inside the
//! graph) follows AttnLRP (Achtibat et al., ICML 2024) in every composite but `cp-lrp`, which
//! holds the attention weights constant (Ali et al., ICML 2022); LayerNorm holds its
//! normalising factor constant in both (see [`sr_nn::propagate::AttentionMode`]).
//!
//! Max pooling is winner-take-all everywhere (`max_pool` chooses how ties are shared).
//! BatchNorm is merged into the conv before it by the canonizer unless `canonize = false`.

use crate::rules::{
    AlphaBeta, Epsilon, Flat, Gamma, Gradient, LayerKind, Pass, Rule, SrpConv, SrpLinear, ZBox,
    ZPlus, STABILIZER,
};
use sr_core::{Error, Result};
use sr_nn::propagate::{ActivationMode, AttentionMode, PoolMode};

/// A composite's name, as `relevance.lrp.composite` spells it (`_` is accepted for `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompositeName {
    Epsilon,
    EpsilonPlusFlat,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    Srp,
    AttnLrp,
    CpLrp,
}

/// Every composite, by name.
pub const COMPOSITES: &[(&str, CompositeName)] = &[
    ("epsilon", CompositeName::Epsilon),
    ("epsilon-plus-flat", CompositeName::EpsilonPlusFlat),
    (
        "epsilon-alpha2-beta1-flat",
        CompositeName::EpsilonAlpha2Beta1Flat,
    ),
    ("epsilon-gamma-box", CompositeName::EpsilonGammaBox),
    ("srp", CompositeName::Srp),
    ("attnlrp", CompositeName::AttnLrp),
    ("cp-lrp", CompositeName::CpLrp),
];

impl std::str::FromStr for CompositeName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let name = s.replace('_', "-");
        COMPOSITES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Error::params(format!("unknown composite `{name}`")).with_help(format!(
                    "composites: {}",
                    COMPOSITES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// A composite with its parameters applied: a rule per layer kind, and the structural choices.
#[derive(Clone, Debug, PartialEq)]
pub struct Composite {
    pub first: Option<Rule>,
    pub conv: Rule,
    pub linear: Rule,
    pub batch_norm: Rule,
    pub activation: ActivationMode,
    pub avg_pool: PoolMode,
    pub attention: AttentionMode,
}

impl Composite {
    /// The composite `name` with `epsilon` for its epsilon layers and `gamma` for its gamma
    /// layers (checked: both `>= 0`).
    pub fn new(name: CompositeName, epsilon: f32, gamma: f32) -> Result<Composite> {
        let eps = Rule::Epsilon(Epsilon::new(epsilon)?);
        let attnlrp = AttentionMode::AttnLrp { epsilon };
        let preset = |first: Rule, conv: Rule| Composite {
            first: Some(first),
            conv,
            linear: eps.clone(),
            batch_norm: Rule::Pass(Pass),
            activation: ActivationMode::Pass,
            avg_pool: PoolMode::Norm {
                epsilon: STABILIZER,
            },
            attention: attnlrp,
        };
        Ok(match name {
            CompositeName::Epsilon => Composite {
                first: None,
                conv: eps.clone(),
                linear: eps.clone(),
                batch_norm: Rule::Gradient(Gradient),
                activation: ActivationMode::Gradient,
                avg_pool: PoolMode::Gradient,
                attention: attnlrp,
            },
            CompositeName::EpsilonPlusFlat => preset(Rule::Flat(Flat), Rule::ZPlus(ZPlus)),
            CompositeName::EpsilonAlpha2Beta1Flat => {
                preset(Rule::Flat(Flat), Rule::AlphaBeta(AlphaBeta::new(2.0, 1.0)?))
            }
            CompositeName::EpsilonGammaBox => preset(
                Rule::ZBox(ZBox::model_bounds()),
                Rule::Gamma(Gamma::new(gamma)?),
            ),
            CompositeName::Srp => Composite {
                first: None,
                conv: Rule::SrpConv(SrpConv),
                linear: Rule::SrpLinear(SrpLinear),
                batch_norm: Rule::Pass(Pass),
                activation: ActivationMode::Pass,
                avg_pool: PoolMode::Gradient,
                attention: attnlrp,
            },
            CompositeName::AttnLrp | CompositeName::CpLrp => Composite {
                first: None,
                conv: eps.clone(),
                linear: eps.clone(),
                batch_norm: Rule::Pass(Pass),
                activation: ActivationMode::Pass,
                avg_pool: PoolMode::Norm {
                    epsilon: STABILIZER,
                },
                attention: if name == CompositeName::CpLrp {
                    AttentionMode::CpLrp { epsilon }
                } else {
                    attnlrp
                },
            },
        })
    }

    /// The rule for a layer of `kind`; `is_first`: the first conv or dense layer.
    pub fn rule_for(&self, kind: LayerKind, is_first: bool) -> &Rule {
        match (kind, &self.first) {
            (LayerKind::Conv | LayerKind::Linear, Some(f)) if is_first => f,
            (LayerKind::Conv, _) => &self.conv,
            (LayerKind::Linear, _) => &self.linear,
            (LayerKind::BatchNorm, _) => &self.batch_norm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_names_parse_with_either_separator() {
        assert_eq!(
            "epsilon_plus_flat".parse::<CompositeName>().unwrap(),
            CompositeName::EpsilonPlusFlat
        );
        let e = "epsilon-flat".parse::<CompositeName>().unwrap_err();
        assert!(e.message.contains("unknown composite `epsilon-flat`"));
        assert!(
            e.help.contains("epsilon-gamma-box, srp, attnlrp, cp-lrp"),
            "{}",
            e.help
        );
    }

    #[test]
    fn presets_give_the_first_layer_its_own_rule() {
        let c = Composite::new(CompositeName::EpsilonGammaBox, 1e-6, 0.25).unwrap();
        assert_eq!(
            c.rule_for(LayerKind::Conv, true),
            &Rule::ZBox(ZBox::model_bounds())
        );
        assert_eq!(
            c.rule_for(LayerKind::Conv, false),
            &Rule::Gamma(Gamma(0.25))
        );
        assert_eq!(c.rule_for(LayerKind::BatchNorm, true), &Rule::Pass(Pass));
        assert!(Composite::new(CompositeName::Epsilon, -1.0, 0.25).is_err());
    }
}
