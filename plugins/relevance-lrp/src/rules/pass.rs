//! The pass rule (Zennit's `Pass`), for batch norms only: `R_in = R`.

use super::{Call, Layer, LayerKind, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::Fused;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pass;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["pass"],
    usage: "pass (batch norm)",
    build: |call: &Call, _| call.args(0).map(|_| Rule::Pass(Pass)),
};

impl RuleMath for Pass {
    fn applies_to(&self, kind: LayerKind) -> bool {
        kind == LayerKind::BatchNorm
    }
    fn apply(&self, _: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        Ok(r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_is_for_batch_norms_only() {
        assert!(Pass.applies_to(LayerKind::BatchNorm));
        assert!(!Pass.applies_to(LayerKind::Conv) && !Pass.applies_to(LayerKind::Linear));
    }
}
