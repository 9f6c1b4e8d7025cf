//! The paper's code (SRP) on dense layers: z+ on `V = W+` without bias,
//! `R_in = a T(V, R / (V a + 1e-9))`.

use super::srp_conv::SRP_STABILIZER;
use super::{Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::ops::{self, Stab};
use sr_nn::propagate::{Fused, Fusion};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SrpLinear;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["srp_linear"],
    usage: "srp_linear",
    build: |call: &Call, _| call.args(0).map(|_| Rule::SrpLinear(SrpLinear)),
};

impl RuleMath for SrpLinear {
    fn fusion(&self) -> Fusion {
        Fusion {
            scales_by_input: true,
            divisor: None,
            finishes: true,
        }
    }
    fn uses_weight_signs(&self) -> bool {
        true
    }
    fn apply(&self, l: &Layer, r: &CTensor, how: &Fused) -> CResult<CTensor> {
        let (m, a) = (l.map, l.a);
        let v = l.w_pos()?;
        // Dense layers at small batches: each live row of W+ read once.
        if let Some(t) = m.tr_of_ratio(a, &v, r, SRP_STABILIZER)? {
            return ops::finish(&t, &l.finish(how));
        }
        let s = Stab::Add(SRP_STABILIZER).divide(r, &m.fwd_where(a, &v, r)?)?;
        m.tr_finish(&s, &v, &l.finish(how))
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn srp_linear_uses_the_positive_weights_and_no_divisor() {
        let r = Rule::parse("srp_linear", &D).unwrap();
        assert!(r.uses_weight_signs() && r.fusion().finishes && r.fusion().divisor.is_none());
    }
}
