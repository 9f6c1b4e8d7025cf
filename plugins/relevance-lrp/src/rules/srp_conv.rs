//! The paper's code (SRP) on convolutions: LRP-0 with `1e-9` added to every denominator,
//! `R_in = a T(W, R / (W a + b + 1e-9))`.

use super::{Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::ops::Stab;
use sr_nn::propagate::{Fused, Fusion};

/// What the paper's code adds to every denominator of its rules.
pub const SRP_STABILIZER: f32 = 1e-9;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SrpConv;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["srp_conv"],
    usage: "srp_conv",
    build: |call: &Call, _| call.args(0).map(|_| Rule::SrpConv(SrpConv)),
};

impl RuleMath for SrpConv {
    fn fusion(&self) -> Fusion {
        Fusion {
            scales_by_input: true,
            divisor: Some(Stab::Add(SRP_STABILIZER)),
            finishes: true,
        }
    }
    fn apply(&self, l: &Layer, r: &CTensor, how: &Fused) -> CResult<CTensor> {
        l.divided_transpose(l.w, Stab::Add(SRP_STABILIZER), r, how)
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn srp_conv_divides_by_z_plus_1e_9() {
        let r = Rule::parse("srp-conv", &D).unwrap();
        let f = r.fusion();
        assert_eq!(f.divisor, Some(Stab::Add(1e-9)));
        assert!(f.finishes && f.scales_by_input && !r.uses_weight_signs());
    }
}
