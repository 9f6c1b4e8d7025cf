//! LRP rules: the math for one layer with weights, after Zennit's formulas
//! (`tests/fixtures/golden/SOURCE-README.md`, section 3, gives them exactly).
//!
//! Notation: input `a`, weights `W`, bias `b`, output relevance `R`; `W+ = max(W, 0)`,
//! `W- = min(W, 0)`, likewise `a+`, `a-`, `b+`, `b-`; `T(V, s)` is the transposed layer map
//! applied to `s` ([`LinearMap`]); `stab_e(d) = d + e * sign0(d)`.
//!
//! Each rule has one home, its module: the type with its parameters (checked when it is
//! built), how it is spelled in TOML ([`RuleSpec`]), what the backward walker may fuse around it
//! ([`RuleMath::fusion`]), its formula, and its unit tests. Adding a rule is a new module
//! and one line in the `rules!` list below; `tests/rules_naive.rs` then checks it against a
//! naive dense f64 reference.

mod alpha_beta;
mod epsilon;
mod flat;
mod gamma;
mod gradient;
mod pass;
mod srp_conv;
mod srp_linear;
mod wsquare;
mod zbox;
mod zplus;

pub use alpha_beta::AlphaBeta;
pub use epsilon::Epsilon;
pub use flat::Flat;
pub use gamma::Gamma;
pub use gradient::Gradient;
pub use pass::Pass;
pub use srp_conv::{SrpConv, SRP_STABILIZER};
pub use srp_linear::SrpLinear;
pub use wsquare::WSquare;
pub use zbox::ZBox;
pub use zplus::ZPlus;

pub use crate::maps::LinearMap;
use candle_core::{Result as CResult, Tensor as CTensor};
use sr_core::graph::Op;
use sr_core::{Error, Result};
use sr_nn::ops::{self, Finish, Stab};
use sr_nn::propagate::{Fused, Fusion};

/// The stabiliser of every rule but epsilon (Zennit's default).
pub const STABILIZER: f32 = 1e-6;

/// The kinds of layer a rule is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Conv,
    Linear,
    BatchNorm,
}

impl LayerKind {
    /// The kind of a graph op, `None` for an op without weights.
    pub fn of(op: &Op) -> Option<LayerKind> {
        match op {
            Op::Conv2d { .. } => Some(LayerKind::Conv),
            Op::Linear => Some(LayerKind::Linear),
            Op::BatchNorm { .. } => Some(LayerKind::BatchNorm),
            _ => None,
        }
    }

    /// The name used in TOML overrides (`rules.conv = ...`) and errors.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Linear => "linear",
            LayerKind::BatchNorm => "batch_norm",
        }
    }
}

/// Per-channel bounds of the normalised input, `(low, high)`: the images of pixel values 0 and
/// 1 under the model's normalisation (z^B's default box).
pub type Bounds = (Vec<f32>, Vec<f32>);

/// One layer as a rule sees it.
pub struct Layer<'a> {
    pub map: &'a dyn LinearMap,
    /// The layer's input and output, as traced.
    pub a: &'a CTensor,
    pub z: &'a CTensor,
    pub w: &'a CTensor,
    pub b: Option<&'a CTensor>,
    /// `(W+, W-)` computed once per model, for the rules that use them (else computed here).
    pub signs: Option<(&'a CTensor, &'a CTensor)>,
    /// The model's input box, for z^B without bounds of its own.
    pub bounds: &'a Bounds,
}

impl Layer<'_> {
    pub fn w_pos(&self) -> CResult<CTensor> {
        self.signs
            .map_or_else(|| pos(self.w), |(p, _)| Ok(p.clone()))
    }
    pub fn w_neg(&self) -> CResult<CTensor> {
        self.signs
            .map_or_else(|| neg(self.w), |(_, n)| Ok(n.clone()))
    }
    /// How a rule's last transposed map is finished (see [`Finish`]): times the input `a`, with
    /// the walker's gate and the division of the layer below.
    pub fn finish<'f>(&'f self, how: &Fused<'f>) -> Finish<'f> {
        Finish {
            times: self.a,
            gate: how.gate,
            div: how.below,
            times_of_div: how.below.and(how.input_is),
        }
    }
    /// One signed share of `r`: `a+ T(v, s) + a- T(u, s)`, `s = r / stab(v a+ + u a- + c)`.
    /// With `(v, u) = (W+, W-)` and `c = b+` it is z+ (alpha-beta's positive part); with
    /// `(W-, W+)` and `b-`, alpha-beta's negative part. `ap`, `an`: `a+` and `a-`.
    ///
    /// `an` is `None` when the input has no negative value (after a ReLU): its terms are then
    /// exactly zero and are not computed, which halves the passes.
    pub fn share(
        &self,
        r: &CTensor,
        (ap, an): (&CTensor, Option<&CTensor>),
        (v, u): (&CTensor, &CTensor),
        c: Option<&CTensor>,
    ) -> CResult<CTensor> {
        let m = self.map;
        let Some(an) = an else {
            let z = m.fwd(ap, v, c)?;
            let s = divide_stabilised(r, &z)?;
            return m.tr_times(&s, v, ap);
        };
        let z = (m.fwd(ap, v, c)? + m.fwd(an, u, None)?)?;
        let s = divide_stabilised(r, &z)?;
        m.tr_times(&s, v, ap)? + m.tr_times(&s, u, an)?
    }
    /// `(a+, a-)` of the layer's input, `a-` `None` when no value is negative (then `a+` is
    /// the input itself, shared, not copied).
    pub fn input_signs(&self) -> CResult<(CTensor, Option<CTensor>)> {
        // In chunks without an early exit inside, so the scan vectorises.
        let nonneg = sr_nn::ops::view(self.a)?
            .chunks(1024)
            .all(|c| c.iter().fold(true, |ok, &v| ok & (v >= 0.0)));
        if nonneg {
            Ok((self.a.clone(), None))
        } else {
            Ok((pos(self.a)?, Some(neg(self.a)?)))
        }
    }
    /// `a * T(v, r / d(z))`, finished as the walker asks; the division skipped when the layer
    /// above did it (`how.divided`). The form of every rule with a divisor ([`Fusion::divisor`]).
    pub fn divided_transpose(
        &self,
        v: &CTensor,
        d: Stab,
        r: &CTensor,
        how: &Fused,
    ) -> CResult<CTensor> {
        let s = if how.divided {
            r.clone()
        } else {
            d.divide(r, self.z)?
        };
        self.map.tr_finish(&s, v, &self.finish(how))
    }
}

pub(crate) fn pos(x: &CTensor) -> CResult<CTensor> {
    x.relu()
}
pub(crate) fn neg(x: &CTensor) -> CResult<CTensor> {
    x.minimum(0f32)
}
/// `r / stab(z)` with the rules' stabiliser, in one pass (the same values as dividing by
/// [`sr_nn::propagate::stabilise`]'s tensor).
pub(crate) fn divide_stabilised(r: &CTensor, z: &CTensor) -> CResult<CTensor> {
    Stab::Sign(STABILIZER).divide(r, z)
}

/// A rule's math, and what the backward walker may fuse around it.
pub trait RuleMath {
    /// Whether the rule applies to a layer of `kind` (by default: conv and linear layers).
    fn applies_to(&self, kind: LayerKind) -> bool {
        kind != LayerKind::BatchNorm
    }
    /// What the walker may fold around it (see [`Fusion`]; nothing by default). `how` in
    /// [`RuleMath::apply`] is only non-trivial for rules with a divisor or that finish.
    fn fusion(&self) -> Fusion {
        Fusion::default()
    }
    /// Whether it splits the weights into `W+` and `W-` (worth computing once per model).
    fn uses_weight_signs(&self) -> bool {
        false
    }
    /// The value at the layer's input (the shape of `l.a`), given the value `r` at its output.
    fn apply(&self, l: &Layer, r: &CTensor, how: &Fused) -> CResult<CTensor>;
}

/// How a rule is written in TOML: its names and how it is built from a call.
pub struct RuleSpec {
    /// The spellings it is parsed from (lower case, `_` for `-` and spaces).
    pub names: &'static [&'static str],
    /// How to write it, for the list of rules in errors (`epsilon(E)`).
    pub usage: &'static str,
    /// Build the rule from a call (its arguments checked with [`Call::args`]); the bare form
    /// takes the defaults.
    pub build: fn(&Call, &Defaults) -> Result<Rule>,
}

/// A rule as written: `name(arg, ...)`.
pub struct Call<'a> {
    /// The text as given (for errors).
    pub text: &'a str,
    /// The normalised name, one of the spec's `names`.
    pub name: &'a str,
    args: Vec<f32>,
}

impl Call<'_> {
    /// The arguments, at most `n` of them.
    pub fn args(&self, n: usize) -> Result<&[f32]> {
        if self.args.len() > n {
            return Err(Error::params(format!(
                "rule `{}` takes at most {n} argument(s)",
                self.text
            )));
        }
        Ok(&self.args)
    }
}

/// What the bare forms of the rules take: the stage's `epsilon` and `gamma`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub epsilon: f32,
    pub gamma: f32,
}

macro_rules! rules {
    ($($variant:ident($ty:ty) in $module:ident),* $(,)?) => {
        /// One LRP rule, its parameters checked. The math of each lives in its module.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Rule {
            $($variant($ty),)*
        }

        impl Rule {
            fn math(&self) -> &dyn RuleMath {
                match self {
                    $(Rule::$variant(r) => r,)*
                }
            }
        }

        /// Every rule's TOML spelling.
        const SPECS: &[RuleSpec] = &[$($module::SPEC,)*];
    };
}

rules! {
    Epsilon(Epsilon) in epsilon,
    ZPlus(ZPlus) in zplus,
    AlphaBeta(AlphaBeta) in alpha_beta,
    Flat(Flat) in flat,
    WSquare(WSquare) in wsquare,
    ZBox(ZBox) in zbox,
    Gamma(Gamma) in gamma,
    Gradient(Gradient) in gradient,
    Pass(Pass) in pass,
    SrpConv(SrpConv) in srp_conv,
    SrpLinear(SrpLinear) in srp_linear,
}

impl Rule {
    /// A rule from its TOML text: `epsilon`, `epsilon(0.25)`, `zplus`, `alpha_beta(2, 1)`,
    /// `alpha2_beta1`, `flat`, `w2`, `zbox`, `gamma`, `gamma(0.5)`, `gradient`, `pass`,
    /// `srp_conv`, `srp_linear`. The bare forms take `defaults`.
    pub fn parse(text: &str, defaults: &Defaults) -> Result<Rule> {
        let t = text.trim().to_ascii_lowercase();
        let norm = |n: &str| n.trim().replace(['-', ' '], "_");
        let (name, args) = match t.split_once('(') {
            Some((n, rest)) => {
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
                (norm(n), args)
            }
            None => (norm(&t), vec![]),
        };
        let spec = SPECS
            .iter()
            .find(|s| s.names.contains(&name.as_str()))
            .ok_or_else(|| {
                Error::params(format!("unknown rule `{name}`")).with_help(format!(
                    "rules: {}",
                    SPECS.iter().map(|s| s.usage).collect::<Vec<_>>().join(", ")
                ))
            })?;
        let call = Call {
            text,
            name: &name,
            args,
        };
        (spec.build)(&call, defaults)
    }

    /// Whether it applies to a layer of `kind`.
    pub fn applies_to(&self, kind: LayerKind) -> bool {
        self.math().applies_to(kind)
    }
    /// See [`RuleMath::fusion`].
    pub fn fusion(&self) -> Fusion {
        self.math().fusion()
    }
    /// See [`RuleMath::uses_weight_signs`].
    pub fn uses_weight_signs(&self) -> bool {
        self.math().uses_weight_signs()
    }

    /// Apply the rule to layer `l` with the walker's fusions (`how`): a rule that neither starts
    /// with a divisor nor finishes ([`Fusion`]) takes only a gate, applied to its result.
    pub fn apply_fused(&self, l: &Layer, r: &CTensor, how: &Fused) -> CResult<CTensor> {
        let m = self.math();
        let f = m.fusion();
        if (how.divided && f.divisor.is_none()) || (how.below.is_some() && !f.finishes) {
            candle_core::bail!("rule {self:?} takes no fused division");
        }
        if f.finishes || f.divisor.is_some() {
            return m.apply(l, r, how);
        }
        let v = m.apply(l, r, &Fused::default())?;
        match how.gate {
            None => Ok(v),
            Some(g) => ops::masked(&v, l.a, g),
        }
    }
}

/// Apply `rule` to one layer: input `a`, output `z` (as traced), weights `w`, bias `b`,
/// upper relevance `r` (no fusions, `W+`/`W-` computed here, z^B on the box [0, 1]).
pub fn apply(
    rule: &Rule,
    m: &dyn LinearMap,
    a: &CTensor,
    z: &CTensor,
    w: &CTensor,
    b: Option<&CTensor>,
    r: &CTensor,
) -> CResult<CTensor> {
    let unit: Bounds = (vec![0.0], vec![1.0]);
    let l = Layer {
        map: m,
        a,
        z,
        w,
        b,
        signs: None,
        bounds: &unit,
    };
    rule.apply_fused(&l, r, &Fused::default())
}

#[cfg(test)]
pub(crate) const D: Defaults = Defaults {
    epsilon: 0.25,
    gamma: 0.25,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_arguments_and_defaults() {
        let d = Defaults {
            epsilon: 0.25,
            gamma: 0.5,
        };
        assert_eq!(
            Rule::parse("epsilon", &d).unwrap(),
            Rule::Epsilon(Epsilon(0.25))
        );
        assert_eq!(
            Rule::parse("Epsilon(1e-6)", &d).unwrap(),
            Rule::Epsilon(Epsilon(1e-6))
        );
        assert_eq!(
            Rule::parse("alpha-beta(3, 2)", &d).unwrap(),
            Rule::AlphaBeta(AlphaBeta {
                alpha: 3.0,
                beta: 2.0
            })
        );
        assert_eq!(Rule::parse("gamma", &d).unwrap(), Rule::Gamma(Gamma(0.5)));
        assert_eq!(
            Rule::parse("zbox", &d).unwrap(),
            Rule::ZBox(ZBox::model_bounds())
        );
        assert!(Rule::parse("alpha_beta(3, 1)", &d).is_err());
        assert!(Rule::parse("epsilon(x)", &d)
            .unwrap_err()
            .message
            .contains("`x` is not a number"));
        assert!(Rule::parse("epsilon(1, 2)", &d)
            .unwrap_err()
            .message
            .contains("takes at most 1 argument(s)"));
        let e = Rule::parse("lrp0", &d).unwrap_err();
        assert!(e.message.contains("unknown rule `lrp0`"));
        assert!(e.help.contains("alpha_beta(A, B)"), "{}", e.help);
    }

    #[test]
    fn every_rule_is_named_once() {
        let mut names: Vec<&str> = SPECS.iter().flat_map(|s| s.names.iter().copied()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a spelling belongs to two rules");
    }

    #[test]
    fn batch_norm_takes_pass_gradient_and_epsilon_only() {
        let bn: Vec<&str> = SPECS
            .iter()
            .filter(|s| {
                let call = Call {
                    text: s.names[0],
                    name: s.names[0],
                    args: vec![],
                };
                (s.build)(&call, &D)
                    .map(|r| r.applies_to(LayerKind::BatchNorm))
                    .unwrap_or(false)
            })
            .map(|s| s.names[0])
            .collect();
        assert_eq!(bn, ["epsilon", "gradient", "pass"]);
    }
}
