//! LRP rules: the math for one layer with weights, after Zennit's formulas
//! (`tests/fixtures/golden/SOURCE-README.md`, section 3, gives them exactly).
//!
//! Notation: input `a`, weights `W`, bias `b`, output relevance `R`; `W+ = max(W, 0)`,
//! `W- = min(W, 0)`, likewise `a+`, `a-`, `b+`, `b-`; `T(V, s)` is the transposed layer map
//! applied to `s`; `stab_e(d) = d + e * sign0(d)`.

use candle_core::{Result as CResult, Tensor as CTensor};
use sr_core::ops::{self, Finish, Stab};
use sr_core::propagate::stabilise;
use sr_core::propagate::Fused;
use sr_core::{Error, Result};

/// The stabiliser of every rule but epsilon (Zennit's default).
pub const STABILIZER: f32 = 1e-6;

/// What the paper's code adds to every denominator of its rules (`srp`).
pub const SRP_STABILIZER: f32 = 1e-9;

/// One LRP rule. Parameters are checked when a rule is built ([`Rule::parse`],
/// [`Rule::alpha_beta`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// `R_in = a * T(W, R / stab_e(W a + b))` (the paper's eq. 4).
    Epsilon(f32),
    /// `R_in = a+ T(W+, s) + a- T(W-, s)`, `s = R / stab(W+ a+ + W- a- + b+)`.
    ZPlus,
    /// `alpha (a+ T(W+, sp) + a- T(W-, sp)) - beta (a+ T(W-, sn) + a- T(W+, sn))`.
    AlphaBeta { alpha: f32, beta: f32 },
    /// Weights and inputs replaced by ones: `R_in = T(1, R / stab(1 * 1))`.
    Flat,
    /// `R_in = T(W^2, R / stab(W^2 * 1))`.
    WSquare,
    /// z^B for the first layer, with per-channel bounds `low`, `high` of the normalised input:
    /// `R_in = a T(W, s) - l T(W+, s) - h T(W-, s)`, `s = R / stab(W a + b - W+ l - b+ - W- h - b-)`.
    ZBox { low: Vec<f32>, high: Vec<f32> },
    /// Positive contributions boosted by gamma, in both signs of z (Zennit's Gamma).
    Gamma(f32),
    /// The gradient: `R_in = T(W, R)`.
    Gradient,
    /// `R_in = R` (batch norm only: Zennit's `Pass`).
    Pass,
    /// The paper's code (SRP), linear layers: `V = W+`, no bias, `R_in = a T(V, R / (V a + 1e-9))`.
    SrpLinear,
    /// The paper's code (SRP), conv layers: LRP-0, `R_in = a T(W, R / (W a + b + 1e-9))`.
    SrpConv,
}

impl Rule {
    /// Alpha-beta with `alpha - beta = 1` and both `>= 0`.
    pub fn alpha_beta(alpha: f32, beta: f32) -> Result<Rule> {
        if !(alpha >= 0.0 && beta >= 0.0 && ((alpha - beta) - 1.0).abs() < 1e-6) {
            return Err(Error::params(format!(
                "alpha-beta needs alpha - beta = 1 and both >= 0, got alpha = {alpha}, beta = {beta}"
            )));
        }
        Ok(Rule::AlphaBeta { alpha, beta })
    }

    pub fn epsilon(e: f32) -> Result<Rule> {
        if !(e >= 0.0) {
            return Err(Error::params(format!("epsilon must be >= 0, got {e}")));
        }
        Ok(Rule::Epsilon(e))
    }

    pub fn gamma(g: f32) -> Result<Rule> {
        if !(g >= 0.0) {
            return Err(Error::params(format!("gamma must be >= 0, got {g}")));
        }
        Ok(Rule::Gamma(g))
    }

    /// `epsilon`, `epsilon(0.25)`, `zplus`, `alpha_beta(2, 1)`, `alpha2_beta1`, `flat`, `w2`,
    /// `zbox` (bounds from the model's normalisation), `gamma`, `gamma(0.5)`, `gradient`,
    /// `srp`. `default_epsilon`/`default_gamma` fill the bare forms.
    pub fn parse(
        text: &str,
        default_epsilon: f32,
        default_gamma: f32,
        bounds: &(Vec<f32>, Vec<f32>),
    ) -> Result<Rule> {
        let t = text.trim().to_ascii_lowercase();
        let norm = |n: &str| n.trim().replace(['-', ' '], "_");
        let (name, args) = match t.split_once('(') {
            Some((n, rest)) => {
                let n = norm(n);
                let inner = rest
                    .strip_suffix(')')
                    .ok_or_else(|| Error::params(format!("rule `{text}`: missing `)`")))?;
                let args = inner
                    .split(',')
                    .map(|a| {
                        a.trim().parse::<f32>().map_err(|_| {
                            Error::params(format!("rule `{text}`: `{a}` is not a number"))
                        })
                    })
                    .collect::<Result<Vec<f32>>>()?;
                (n.to_string(), args)
            }
            None => (norm(&t), vec![]),
        };
        let arity = |n: usize| -> Result<()> {
            if args.len() > n {
                Err(Error::params(format!(
                    "rule `{text}` takes at most {n} argument(s)"
                )))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "epsilon" | "eps" => {
                arity(1)?;
                Rule::epsilon(args.first().copied().unwrap_or(default_epsilon))
            }
            "zplus" | "z_plus" => arity(0).map(|_| Rule::ZPlus),
            "alpha_beta" => {
                arity(2)?;
                Rule::alpha_beta(args.first().copied().unwrap_or(2.0), args.get(1).copied().unwrap_or(1.0))
            }
            "alpha2_beta1" => arity(0).and_then(|_| Rule::alpha_beta(2.0, 1.0)),
            "alpha1_beta0" => arity(0).and_then(|_| Rule::alpha_beta(1.0, 0.0)),
            "flat" => arity(0).map(|_| Rule::Flat),
            "w2" | "wsquare" | "w_square" => arity(0).map(|_| Rule::WSquare),
            "zbox" | "z_box" => arity(0).map(|_| Rule::ZBox { low: bounds.0.clone(), high: bounds.1.clone() }),
            "gamma" => {
                arity(1)?;
                Rule::gamma(args.first().copied().unwrap_or(default_gamma))
            }
            "gradient" => arity(0).map(|_| Rule::Gradient),
            "pass" => arity(0).map(|_| Rule::Pass),
            other => Err(Error::params(format!("unknown rule `{other}`")).with_help(
                "rules: epsilon, epsilon(E), zplus, alpha_beta(A, B), alpha2_beta1, flat, w2, zbox, gamma, gamma(G), gradient, pass (batch norm)",
            )),
        }
    }
}

/// A layer's linear map: a convolution or a dense layer, applied with any weights.
pub trait LinearMap {
    /// `V x + c`.
    fn fwd(&self, x: &CTensor, v: &CTensor, c: Option<&CTensor>) -> CResult<CTensor>;
    /// `T(V, s)`, shaped like the layer's input.
    fn tr(&self, s: &CTensor, v: &CTensor) -> CResult<CTensor>;
    /// A tensor shaped like the input, each channel filled with `values[channel]`.
    fn per_channel(&self, a: &CTensor, values: &[f32]) -> CResult<CTensor>;
    /// `V x` at the outputs where `r` (the relevance arriving there) is non-zero in some
    /// sample; the others may hold anything (their relevance is zero, and so is what they send
    /// back). Dense layers skip the rows of `V` that are not needed.
    fn fwd_where(&self, x: &CTensor, v: &CTensor, r: &CTensor) -> CResult<CTensor> {
        let _ = r;
        self.fwd(x, v, None)
    }
    /// `x * T(V, s)` element-wise (`x` shaped like the input): the last step of most rules,
    /// which a map may fuse into its transpose.
    fn tr_times(&self, s: &CTensor, v: &CTensor, x: &CTensor) -> CResult<CTensor> {
        self.tr_finish(s, v, &Finish::times(x))
    }
    /// `T(V, s)` finished by `fin` (the general form of [`LinearMap::tr_times`]: the factor
    /// gated, and the division of the layer below, see [`Finish`]).
    fn tr_finish(&self, s: &CTensor, v: &CTensor, fin: &Finish) -> CResult<CTensor> {
        ops::finish(&self.tr(s, v)?, fin)
    }
    /// `T(V, r / (V x + e))` in one pass over `V` where the map can (dense layers, small
    /// batches: [`ops::linear_ratio_t`]), else `None`.
    fn tr_of_ratio(
        &self,
        x: &CTensor,
        v: &CTensor,
        r: &CTensor,
        e: f32,
    ) -> CResult<Option<CTensor>> {
        let _ = (x, v, r, e);
        Ok(None)
    }
}

fn pos(x: &CTensor) -> CResult<CTensor> {
    x.relu()
}
fn neg(x: &CTensor) -> CResult<CTensor> {
    x.minimum(0f32)
}

/// Apply `rule` to one layer: input `a`, output `z` (as traced), weights `w`, bias `b`,
/// upper relevance `r`.
pub fn apply(
    rule: &Rule,
    m: &dyn LinearMap,
    a: &CTensor,
    z: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    r: &CTensor,
) -> CResult<CTensor> {
    apply_with_signs(rule, m, a, z, w, b, r, None, &Fused::default())
}

/// Whether `rule` sends back `a * (...)` (or `a+ * (...) + a- * (...)`) element-wise, so its
/// value is zero wherever the layer's input `a` is.
pub fn scales_by_input(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::Epsilon(_)
            | Rule::ZPlus
            | Rule::AlphaBeta { .. }
            | Rule::Gamma(_)
            | Rule::SrpLinear
            | Rule::SrpConv
    )
}

/// Whether `rule` splits the weights into `W+` and `W-` (worth computing once per model).
pub fn uses_weight_signs(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::ZPlus | Rule::AlphaBeta { .. } | Rule::ZBox { .. } | Rule::Gamma(_) | Rule::SrpLinear
    )
}

/// The divisor `rule` starts from (`s = r / d(z)`, `z` the layer's traced output), if any.
pub fn divisor(rule: &Rule) -> Option<Stab> {
    match rule {
        Rule::Epsilon(e) => Some(Stab::Sign(*e)),
        Rule::SrpConv => Some(Stab::Add(SRP_STABILIZER)),
        _ => None,
    }
}

/// Whether `rule` ends in one `a * T(V, s)` that can take the walker's fusions.
pub fn finishes(rule: &Rule) -> bool {
    matches!(rule, Rule::Epsilon(_) | Rule::SrpLinear | Rule::SrpConv)
}

/// [`apply`] with `W+` and `W-` computed beforehand (`signs`), or on the fly when `None`, and
/// the walker's fusions (`how`: only a gate for the rules that neither start with a
/// [`divisor`] nor [`finishes`]; those multiply their result by it).
#[allow(clippy::too_many_arguments)]
pub fn apply_with_signs(
    rule: &Rule,
    m: &dyn LinearMap,
    a: &CTensor,
    z: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    r: &CTensor,
    signs: Option<(&CTensor, &CTensor)>,
    how: &Fused,
) -> CResult<CTensor> {
    if (how.divided && divisor(rule).is_none()) || (how.below.is_some() && !finishes(rule)) {
        candle_core::bail!("rule {rule:?} takes no fused division");
    }
    let fin = |x| Finish {
        times: x,
        gate: how.gate,
        div: how.below,
        times_of_div: how.below.and(how.input_is),
    };
    match (rule, divisor(rule)) {
        // The rules with a divisor: a * T(W, r / d(z)), the division perhaps done by the
        // layer above.
        (_, Some(d)) => {
            let s = if how.divided {
                r.clone()
            } else {
                d.divide(r, z)?
            };
            m.tr_finish(&s, w, &fin(a))
        }
        (Rule::SrpLinear, _) => {
            let v = signs.map_or_else(|| pos(w), |(p, _)| Ok(p.clone()))?;
            if let Some(t) = m.tr_of_ratio(a, &v, r, SRP_STABILIZER)? {
                return ops::finish(&t, &fin(a));
            }
            let s = Stab::Add(SRP_STABILIZER).divide(r, &m.fwd_where(a, &v, r)?)?;
            m.tr_finish(&s, &v, &fin(a))
        }
        _ => {
            let v = apply_unfused(rule, m, a, z, w, b, r, signs)?;
            match how.gate {
                None => Ok(v),
                Some(g) => ops::masked(&v, a, g),
            }
        }
    }
}

/// The rules other than those [`apply_with_signs`] fuses.
#[allow(clippy::too_many_arguments)]
fn apply_unfused(
    rule: &Rule,
    m: &dyn LinearMap,
    a: &CTensor,
    z: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    r: &CTensor,
    signs: Option<(&CTensor, &CTensor)>,
) -> CResult<CTensor> {
    let wpos = || -> CResult<CTensor> { signs.map_or_else(|| pos(w), |(p, _)| Ok(p.clone())) };
    let wneg = || -> CResult<CTensor> { signs.map_or_else(|| neg(w), |(_, n)| Ok(n.clone())) };
    let stab = |d: &CTensor| stabilise(d, STABILIZER);
    let bp = b.map(pos).transpose()?;
    let bn = b.map(neg).transpose()?;
    match rule {
        Rule::Gradient => m.tr(r, w),
        Rule::Pass => candle_core::bail!("the pass rule is only defined for batch norm layers"),
        Rule::ZPlus => {
            let (ap, an, wp, wn) = (pos(a)?, neg(a)?, wpos()?, wneg()?);
            let zz = (m.fwd(&ap, &wp, bp.as_ref())? + m.fwd(&an, &wn, None)?)?;
            let s = r.div(&stab(&zz)?)?;
            m.tr_times(&s, &wp, &ap)? + m.tr_times(&s, &wn, &an)?
        }
        Rule::AlphaBeta { alpha, beta } => {
            let (ap, an, wp, wn) = (pos(a)?, neg(a)?, wpos()?, wneg()?);
            let zp = (m.fwd(&ap, &wp, bp.as_ref())? + m.fwd(&an, &wn, None)?)?;
            let zn = (m.fwd(&ap, &wn, bn.as_ref())? + m.fwd(&an, &wp, None)?)?;
            let sp = r.div(&stab(&zp)?)?;
            let sn = r.div(&stab(&zn)?)?;
            let rp = (m.tr_times(&sp, &wp, &ap)? + m.tr_times(&sp, &wn, &an)?)?;
            let rn = (m.tr_times(&sn, &wn, &ap)? + m.tr_times(&sn, &wp, &an)?)?;
            rp.affine(*alpha as f64, 0.0)? - rn.affine(*beta as f64, 0.0)?
        }
        Rule::Flat => {
            let ones_w = w.ones_like()?;
            let zz = m.fwd(&a.ones_like()?, &ones_w, None)?;
            m.tr(&r.div(&stab(&zz)?)?, &ones_w)
        }
        Rule::WSquare => {
            let w2 = w.sqr()?;
            let zz = m.fwd(&a.ones_like()?, &w2, None)?;
            m.tr(&r.div(&stab(&zz)?)?, &w2)
        }
        Rule::ZBox { low, high } => {
            let (wp, wn) = (wpos()?, wneg()?);
            let (l, h) = (m.per_channel(a, low)?, m.per_channel(a, high)?);
            let mut zz = ((m.fwd(a, w, b)? - m.fwd(&l, &wp, bp.as_ref())?)?
                - m.fwd(&h, &wn, bn.as_ref())?)?;
            zz = stab(&zz)?;
            let s = r.div(&zz)?;
            (m.tr_times(&s, w, a)? - m.tr_times(&s, &wp, &l)?)? - m.tr_times(&s, &wn, &h)?
        }
        Rule::Gamma(g) => {
            let g = *g as f64;
            let (ap, an) = (pos(a)?, neg(a)?);
            let wpp = (w + wpos()?.affine(g, 0.0)?)?;
            let wnn = (w + wneg()?.affine(g, 0.0)?)?;
            let bpp = match b {
                Some(b) => Some((b + pos(b)?.affine(g, 0.0)?)?),
                None => None,
            };
            let bnn = match b {
                Some(b) => Some((b + neg(b)?.affine(g, 0.0)?)?),
                None => None,
            };
            let zpos = z.gt(0f32)?.to_dtype(candle_core::DType::F32)?;
            let zneg = z.lt(0f32)?.to_dtype(candle_core::DType::F32)?;
            let dp = (m.fwd(&ap, &wpp, bpp.as_ref())? + m.fwd(&an, &wnn, None)?)?;
            let dn = (m.fwd(&ap, &wnn, bnn.as_ref())? + m.fwd(&an, &wpp, None)?)?;
            let sp = r.mul(&zpos)?.div(&stab(&dp)?)?;
            let sn = r.mul(&zneg)?.div(&stab(&dn)?)?;
            let out = (m.tr_times(&sp, &wpp, &ap)? + m.tr_times(&sp, &wnn, &an)?)?;
            (out + m.tr_times(&sn, &wnn, &ap)?)? + m.tr_times(&sn, &wpp, &an)?
        }
        Rule::Epsilon(_) | Rule::SrpLinear | Rule::SrpConv => {
            unreachable!("fused by apply_with_signs")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> (Vec<f32>, Vec<f32>) {
        (vec![0.0; 3], vec![1.0; 3])
    }

    #[test]
    fn alpha_beta_is_checked_when_built() {
        assert!(Rule::alpha_beta(2.0, 1.0).is_ok());
        assert!(Rule::alpha_beta(1.0, 0.0).is_ok());
        let e = Rule::alpha_beta(2.0, 2.0).unwrap_err();
        assert_eq!(
            e.message,
            "alpha-beta needs alpha - beta = 1 and both >= 0, got alpha = 2, beta = 2"
        );
        assert!(Rule::alpha_beta(0.5, -0.5).is_err());
    }

    #[test]
    fn rules_parse_with_arguments_and_defaults() {
        assert_eq!(
            Rule::parse("epsilon", 0.25, 0.25, &b()).unwrap(),
            Rule::Epsilon(0.25)
        );
        assert_eq!(
            Rule::parse("Epsilon(1e-6)", 0.25, 0.25, &b()).unwrap(),
            Rule::Epsilon(1e-6)
        );
        assert_eq!(
            Rule::parse("alpha-beta(3, 2)", 0.0, 0.0, &b()).unwrap(),
            Rule::AlphaBeta {
                alpha: 3.0,
                beta: 2.0
            }
        );
        assert_eq!(
            Rule::parse("gamma", 0.0, 0.5, &b()).unwrap(),
            Rule::Gamma(0.5)
        );
        assert_eq!(
            Rule::parse("zbox", 0.0, 0.0, &b()).unwrap(),
            Rule::ZBox {
                low: vec![0.0; 3],
                high: vec![1.0; 3]
            }
        );
        assert!(Rule::parse("alpha_beta(3, 1)", 0.0, 0.0, &b()).is_err());
        assert!(Rule::parse("epsilon(x)", 0.0, 0.0, &b())
            .unwrap_err()
            .message
            .contains("`x` is not a number"));
        assert!(Rule::parse("lrp0", 0.0, 0.0, &b())
            .unwrap_err()
            .message
            .contains("unknown rule `lrp0`"));
    }
}
