//! The flat rule (Zennit's `Flat`): weights and inputs replaced by ones, so relevance spreads
//! evenly over each output's receptive field. `R_in = T(1, R / stab(1 * 1))`.

use super::{divide_stabilised, Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::Fused;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flat;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["flat"],
    usage: "flat",
    build: |call: &Call, _| call.args(0).map(|_| Rule::Flat(Flat)),
};

impl RuleMath for Flat {
    fn apply(&self, l: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        if let Some(out) = l.map.flat(l.a, l.w, r)? {
            return Ok(out);
        }
        let ones_w = l.w.ones_like()?;
        let zz = l.map.fwd(&l.a.ones_like()?, &ones_w, None)?;
        l.map.tr(&divide_stabilised(r, &zz)?, &ones_w)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LayerKind, D};
    use super::*;

    #[test]
    fn flat_is_for_conv_and_linear_layers() {
        let r = Rule::parse("flat", &D).unwrap();
        assert!(r.applies_to(LayerKind::Conv) && !r.applies_to(LayerKind::BatchNorm));
        assert!(!r.fusion().scales_by_input);
    }
}
