//! The epsilon rule (LRP-epsilon; the paper's eq. 4; Zennit's `Epsilon`):
//! `R_in = a * T(W, R / stab_e(W a + b))`. On a batch norm, the same with its per-channel scale.

use super::{Call, Defaults, Layer, LayerKind, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_core::{Error, Result};
use sr_nn::ops::Stab;
use sr_nn::propagate::{Fused, Fusion};

/// LRP-epsilon with stabiliser `e >= 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epsilon(pub f32);

impl Epsilon {
    pub fn new(e: f32) -> Result<Self> {
        if e.is_nan() || e < 0.0 {
            return Err(Error::params(format!("epsilon must be >= 0, got {e}")));
        }
        Ok(Epsilon(e))
    }
}

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["epsilon", "eps"],
    usage: "epsilon, epsilon(E)",
    build: |call: &Call, d: &Defaults| {
        let e = call.args(1)?.first().copied().unwrap_or(d.epsilon);
        Ok(Rule::Epsilon(Epsilon::new(e)?))
    },
};

impl RuleMath for Epsilon {
    fn applies_to(&self, _: LayerKind) -> bool {
        true
    }
    fn fusion(&self) -> Fusion {
        Fusion {
            scales_by_input: true,
            divisor: Some(Stab::Sign(self.0)),
            finishes: true,
        }
    }
    fn apply(&self, l: &Layer, r: &CTensor, how: &Fused) -> CResult<CTensor> {
        l.divided_transpose(l.w, Stab::Sign(self.0), r, how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_is_checked_when_built() {
        assert_eq!(Epsilon::new(0.0).unwrap(), Epsilon(0.0));
        assert!(Epsilon::new(-1.0)
            .unwrap_err()
            .message
            .contains("epsilon must be >= 0, got -1"));
        assert!(Epsilon::new(f32::NAN).is_err());
    }
}
