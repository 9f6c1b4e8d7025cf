//! The gamma rule (Zennit's `Gamma`): positive contributions boosted by gamma, in both signs of
//! `z`. With `W' = W + gamma W+`, `W'' = W + gamma W-` (biases likewise):
//! for `z > 0`, `s+ = R / stab(W' a+ + W'' a- + b')`, sent back by `a+ T(W', s+) + a- T(W'', s+)`;
//! for `z < 0`, `s- = R / stab(W'' a+ + W' a- + b'')`, sent back by `a+ T(W'', s-) + a- T(W', s-)`.

use super::{divide_stabilised, neg, pos, Call, Defaults, Layer, Rule, RuleMath, RuleSpec};
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_core::{Error, Result};
use sr_nn::propagate::{Fused, Fusion};

/// The gamma rule with `gamma >= 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gamma(pub f32);

impl Gamma {
    pub fn new(g: f32) -> Result<Self> {
        if g.is_nan() || g < 0.0 {
            return Err(Error::params(format!("gamma must be >= 0, got {g}")));
        }
        Ok(Gamma(g))
    }
}

pub(super) const SPEC: RuleSpec = RuleSpec {
    names: &["gamma"],
    usage: "gamma, gamma(G)",
    build: |call: &Call, d: &Defaults| {
        let g = call.args(1)?.first().copied().unwrap_or(d.gamma);
        Ok(Rule::Gamma(Gamma::new(g)?))
    },
};

impl RuleMath for Gamma {
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
        let (m, w, b, z) = (l.map, l.w, l.b, l.z);
        let g = self.0 as f64;
        let (ap, an) = l.input_signs()?;
        let zpos = z.gt(0f32)?.to_dtype(candle_core::DType::F32)?;
        let zneg = z.lt(0f32)?.to_dtype(candle_core::DType::F32)?;
        let Some(an) = an else {
            // No negative input: with P = W+ a + b+ (one pass), W' a + b' = z + gamma P and
            // W'' a + b'' = z + gamma (z - P); and a T(W', s+) + a T(W'', s-) =
            // a (T(W, s+ + (1 + gamma) s-) + gamma T(W+, s+ - s-)): no shifted kernels, two
            // transposes of kernels whose flips are cached.
            let wp = l.w_pos()?;
            let p = m.fwd(&ap, &wp, b.map(pos).transpose()?.as_ref())?;
            let dp = (z + p.affine(g, 0.0)?)?;
            let dn = (z + (z - &p)?.affine(g, 0.0)?)?;
            let sp = divide_stabilised(&r.mul(&zpos)?, &dp)?;
            let sn = divide_stabilised(&r.mul(&zneg)?, &dn)?;
            let plain = m.tr_times(&(&sp + sn.affine(1.0 + g, 0.0)?)?, w, &ap)?;
            let boost = m.tr_times(&(&sp - &sn)?, &wp, &ap)?;
            return plain + boost.affine(g, 0.0)?;
        };
        let wpp = (w + l.w_pos()?.affine(g, 0.0)?)?;
        let wnn = (w + l.w_neg()?.affine(g, 0.0)?)?;
        let bpp = match b {
            Some(b) => Some((b + pos(b)?.affine(g, 0.0)?)?),
            None => None,
        };
        let bnn = match b {
            Some(b) => Some((b + neg(b)?.affine(g, 0.0)?)?),
            None => None,
        };
        let dp = (m.fwd(&ap, &wpp, bpp.as_ref())? + m.fwd(&an, &wnn, None)?)?;
        let dn = (m.fwd(&ap, &wnn, bnn.as_ref())? + m.fwd(&an, &wpp, None)?)?;
        let sp = divide_stabilised(&r.mul(&zpos)?, &dp)?;
        let sn = divide_stabilised(&r.mul(&zneg)?, &dn)?;
        let out = (m.tr_times(&sp, &wpp, &ap)? + m.tr_times(&sp, &wnn, &an)?)?;
        (out + m.tr_times(&sn, &wnn, &ap)?)? + m.tr_times(&sn, &wpp, &an)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_checked_when_built() {
        assert!(Gamma::new(0.0).is_ok());
        assert!(Gamma::new(-0.25)
            .unwrap_err()
            .message
            .contains("gamma must be >= 0, got -0.25"));
        let d = Defaults {
            epsilon: 0.0,
            gamma: 0.5,
        };
        assert_eq!(
            Rule::parse("gamma(2)", &d).unwrap(),
            Rule::Gamma(Gamma(2.0))
        );
        assert_eq!(Rule::parse("gamma", &d).unwrap(), Rule::Gamma(Gamma(0.5)));
    }
}
