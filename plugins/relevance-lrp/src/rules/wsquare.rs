//! The w^2 rule (Zennit's `WSquare`): `R_in = T(W^2, R / stab(W^2 * 1))`.

use super::{divide_stabilised, Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::Fused;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WSquare;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["w2", "wsquare", "w_square"],
    usage: "w2",
    build: |call: &Call, _| call.args(0).map(|_| Rule::WSquare(WSquare)),
};

impl RuleMath for WSquare {
    fn apply(&self, l: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        let w2 = l.w.sqr()?;
        let zz = l.map.fwd(&l.a.ones_like()?, &w2, None)?;
        l.map.tr(&divide_stabilised(r, &zz)?, &w2)
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn w2_has_three_spellings() {
        for t in ["w2", "WSquare", "w-square"] {
            assert_eq!(Rule::parse(t, &D).unwrap(), Rule::WSquare(WSquare), "{t}");
        }
    }
}
