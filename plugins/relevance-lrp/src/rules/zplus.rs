//! The z+ rule (Zennit's `ZPlus`): positive contributions only.
//! `R_in = a+ T(W+, s) + a- T(W-, s)`, `s = R / stab(W+ a+ + W- a- + b+)`.

use super::{pos, Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::{Fused, Fusion};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZPlus;

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["zplus", "z_plus"],
    usage: "zplus",
    build: |call: &Call, _| call.args(0).map(|_| Rule::ZPlus(ZPlus)),
};

impl RuleMath for ZPlus {
    fn fusion(&self) -> Fusion {
        Fusion {
            scales_by_input: true,
            ..Fusion::default()
        }
    }
    fn uses_weight_signs(&self) -> bool {
        true
    }
    fn apply(&self, l: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        let bp = l.b.map(pos).transpose()?;
        let ((ap, an), wp, wn) = (l.input_signs()?, l.w_pos()?, l.w_neg()?);
        l.share(r, (&ap, an.as_ref()), (&wp, &wn), bp.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn zplus_takes_no_arguments() {
        assert_eq!(Rule::parse("z-plus", &D).unwrap(), Rule::ZPlus(ZPlus));
        assert!(Rule::parse("zplus(1)", &D).is_err());
    }
}
