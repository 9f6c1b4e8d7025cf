//! The z^B rule for the first layer (Zennit's `ZBox`), with per-channel bounds `l`, `h` of the
//! normalised input: `R_in = a T(W, s) - l T(W+, s) - h T(W-, s)`,
//! `s = R / stab(W a + b - W+ l - b+ - W- h - b-)`. Without bounds of its own it takes the
//! model's: the normalised images of pixel values 0 and 1.

use super::{divide_stabilised, neg, pos, Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_nn::propagate::Fused;

#[derive(Clone, Debug, PartialEq)]
pub struct ZBox {
    /// `(low, high)` per channel; `None`: the model's input box.
    pub bounds: Option<(Vec<f32>, Vec<f32>)>,
}

impl ZBox {
    /// z^B on the model's input box.
    pub fn model_bounds() -> Self {
        ZBox { bounds: None }
    }
    /// z^B on the box `[low, high]` (per channel, or one value for all).
    pub fn with_bounds(low: Vec<f32>, high: Vec<f32>) -> Self {
        ZBox {
            bounds: Some((low, high)),
        }
    }
}

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["zbox", "z_box"],
    usage: "zbox",
    build: |call: &Call, _| call.args(0).map(|_| Rule::ZBox(ZBox::model_bounds())),
};

impl RuleMath for ZBox {
    fn uses_weight_signs(&self) -> bool {
        true
    }
    fn apply(&self, l: &Layer, r: &CTensor, _: &Fused) -> CResult<CTensor> {
        let m = l.map;
        let (low, high) = self.bounds.as_ref().unwrap_or(l.bounds);
        let bp = l.b.map(pos).transpose()?;
        let bn = l.b.map(neg).transpose()?;
        let (wp, wn) = (l.w_pos()?, l.w_neg()?);
        let (lo, hi) = (m.per_channel(l.a, low)?, m.per_channel(l.a, high)?);
        let zz = ((m.fwd(l.a, l.w, l.b)? - m.fwd(&lo, &wp, bp.as_ref())?)?
            - m.fwd(&hi, &wn, bn.as_ref())?)?;
        let s = divide_stabilised(r, &zz)?;
        (m.tr_times(&s, l.w, l.a)? - m.tr_times(&s, &wp, &lo)?)? - m.tr_times(&s, &wn, &hi)?
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn zbox_parses_to_the_models_box() {
        assert_eq!(
            Rule::parse("z-box", &D).unwrap(),
            Rule::ZBox(ZBox { bounds: None })
        );
        assert!(Rule::parse("zbox(0)", &D).is_err());
    }
}
