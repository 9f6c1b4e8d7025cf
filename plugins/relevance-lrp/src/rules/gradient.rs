//! The gradient as a rule: `R_in = T(W, R)`. On a batch norm, times its per-channel scale.

use super::{Call, Layer, LayerKind, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::Fused;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gradient;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["gradient"],
    usage: "gradient",
    build: |call: &Call, _| call.args(0).map(|_| Rule::Gradient(Gradient)),
};

impl RuleMath for Gradient {
    fn applies_to(&self, _: LayerKind) -> bool {
        true
    }
    fn apply(&self, l: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        l.map.tr(r, l.w)
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;
    use sr_nn::propagate::Fusion;

    #[test]
    fn the_gradient_does_not_scale_by_the_input() {
        let g = Rule::parse("gradient", &D).unwrap();
        assert_eq!(g.fusion(), Fusion::default());
    }
}
