//! The alpha-beta rule (Zennit's `AlphaBeta`): positive and negative contributions weighted
//! apart. `alpha (a+ T(W+, sp) + a- T(W-, sp)) - beta (a+ T(W-, sn) + a- T(W+, sn))`,
//! `sp = R / stab(W+ a+ + W- a- + b+)`, `sn = R / stab(W- a+ + W+ a- + b-)`.

use super::{neg, pos, Call, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_core::{Error, Result};
use sr_nn::propagate::{Fused, Fusion};

/// Alpha-beta with `alpha - beta = 1` and both `>= 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaBeta {
    pub alpha: f32,
    pub beta: f32,
}

impl AlphaBeta {
    pub fn new(alpha: f32, beta: f32) -> Result<Self> {
        if !(alpha >= 0.0 && beta >= 0.0 && ((alpha - beta) - 1.0).abs() < 1e-6) {
            return Err(Error::params(format!(
                "alpha-beta needs alpha - beta = 1 and both >= 0, got alpha = {alpha}, beta = {beta}"
            )));
        }
        Ok(AlphaBeta { alpha, beta })
    }
}

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["alpha_beta", "alpha2_beta1", "alpha1_beta0"],
    usage: "alpha_beta(A, B), alpha2_beta1, alpha1_beta0",
    build: |call: &Call, _| {
        let (alpha, beta) = match call.name {
            // The presets take no arguments: the name says it.
            "alpha2_beta1" => call.args(0).map(|_| (2.0, 1.0))?,
            "alpha1_beta0" => call.args(0).map(|_| (1.0, 0.0))?,
            _ => {
                let a = call.args(2)?;
                (
                    a.first().copied().unwrap_or(2.0),
                    a.get(1).copied().unwrap_or(1.0),
                )
            }
        };
        Ok(Rule::AlphaBeta(AlphaBeta::new(alpha, beta)?))
    },
};

impl RuleMath for AlphaBeta {
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
        let bn = l.b.map(neg).transpose()?;
        let ((ap, an), wp, wn) = (l.input_signs()?, l.w_pos()?, l.w_neg()?);
        let rp = l.share(r, (&ap, an.as_ref()), (&wp, &wn), bp.as_ref())?;
        let rn = l.share(r, (&ap, an.as_ref()), (&wn, &wp), bn.as_ref())?;
        rp.affine(self.alpha as f64, 0.0)? - rn.affine(self.beta as f64, 0.0)?
    }
}

#[cfg(test)]
mod tests {
    use super::super::D;
    use super::*;

    #[test]
    fn alpha_beta_is_checked_when_built() {
        assert!(AlphaBeta::new(2.0, 1.0).is_ok());
        assert!(AlphaBeta::new(1.0, 0.0).is_ok());
        let e = AlphaBeta::new(2.0, 2.0).unwrap_err();
        assert_eq!(
            e.message,
            "alpha-beta needs alpha - beta = 1 and both >= 0, got alpha = 2, beta = 2"
        );
        assert!(AlphaBeta::new(0.5, -0.5).is_err());
    }

    #[test]
    fn the_named_presets_parse_to_their_parameters() {
        let ab = |a, b| Rule::AlphaBeta(AlphaBeta { alpha: a, beta: b });
        assert_eq!(Rule::parse("alpha2_beta1", &D).unwrap(), ab(2.0, 1.0));
        assert_eq!(Rule::parse("alpha1-beta0", &D).unwrap(), ab(1.0, 0.0));
        assert_eq!(Rule::parse("alpha_beta", &D).unwrap(), ab(2.0, 1.0));
        assert!(Rule::parse("alpha1_beta0(3, 2)", &D)
            .unwrap_err()
            .message
            .contains("takes at most 0 argument(s)"));
    }
}
