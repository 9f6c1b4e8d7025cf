//! An example third-party srhost plugin, and the worked example of `docs/plugin-authoring.md`.
//!
//! It provides one saliency stage, `saliency.frequency-tuned`: the frequency-tuned salient
//! region detection of Achanta, Hemami, Estrada and Süsstrunk (CVPR 2009). The saliency of a
//! pixel is the distance, in CIE L*a*b* (D65), between the image's mean colour and the pixel's
//! colour after a small binomial blur:
//!
//! `S(x, y) = || mean(I_lab) - (I_lab * B)(x, y) ||_2`, then scaled to [0, 1] by its maximum.
//!
//! It is loaded from its `.so`: `srhost --plugin-dir target/debug plugins`.

use serde::{Deserialize, Serialize};
use sr_core::{Error, Image, Params, Result, Saliency, SaliencyStage, StageDef};

/// The stage's parameters: one TOML table, every key optional.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrequencyTunedParams {
    /// Width of the binomial blur kernel: 1 (none), 3 or 5 (the paper's).
    pub blur: usize,
    /// `"lab"` (the paper's) or `"rgb"`.
    pub color_space: String,
}

impl Default for FrequencyTunedParams {
    fn default() -> Self {
        FrequencyTunedParams {
            blur: 5,
            color_space: "lab".into(),
        }
    }
}

impl Params for FrequencyTunedParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        (
            "blur",
            "width of the binomial blur kernel: 1 (none), 3 or 5 (the paper's)",
        ),
        (
            "color_space",
            "colour space of the distance: \"lab\" (the paper's, D65) or \"rgb\"",
        ),
    ];
}

/// Frequency-tuned saliency (Achanta et al. 2009).
pub struct FrequencyTuned {
    kernel: Vec<f32>,
    lab: bool,
}

impl SaliencyStage for FrequencyTuned {
    type Params = FrequencyTunedParams;

    fn build(p: FrequencyTunedParams) -> Result<Self> {
        let kernel = match p.blur {
            1 => vec![1.0],
            3 => vec![0.25, 0.5, 0.25],
            5 => vec![1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0],
            other => {
                return Err(Error::params(format!(
                    "`blur` must be 1, 3 or 5, got {other}"
                )))
            }
        };
        let lab = match p.color_space.as_str() {
            "lab" => true,
            "rgb" => false,
            other => {
                return Err(Error::params(format!(
                    "`color_space` must be \"lab\" or \"rgb\", got \"{other}\""
                )))
            }
        };
        Ok(FrequencyTuned { kernel, lab })
    }
}

/// sRGB in [0, 1] to CIE L*a*b* with the D65 white.
pub fn srgb_to_lab(rgb: [f32; 3]) -> [f32; 3] {
    let lin = |c: f32| {
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f32| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Separable blur with edge replication, on an interleaved `h x w x c` buffer.
fn blur(data: &[f32], w: usize, h: usize, c: usize, k: &[f32]) -> Vec<f32> {
    let r = (k.len() / 2) as isize;
    let pass = |src: &[f32], horizontal: bool| {
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (i, kv) in k.iter().enumerate() {
                        let d = i as isize - r;
                        let (sx, sy) = if horizontal {
                            ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                        };
                        acc += kv * src[(sy * w + sx) * c + ch];
                    }
                    out[(y * w + x) * c + ch] = acc;
                }
            }
        }
        out
    };
    pass(&pass(data, true), false)
}

impl Saliency for FrequencyTuned {
    fn saliency(&self, input: &Image) -> Result<Image> {
        let (w, h) = (input.width, input.height);
        // Grey maps are treated as RGB with equal channels.
        let colours: Vec<f32> = (0..w * h)
            .flat_map(|i| {
                let px = |c: usize| input.data()[i * input.channels + c.min(input.channels - 1)];
                let rgb = [px(0), px(1), px(2)];
                if self.lab {
                    srgb_to_lab(rgb)
                } else {
                    rgb
                }
            })
            .collect();
        let mut mean = [0.0f64; 3];
        for (i, v) in colours.iter().enumerate() {
            mean[i % 3] += *v as f64 / (w * h) as f64;
        }
        let blurred = blur(&colours, w, h, 3, &self.kernel);
        let mut s: Vec<f32> = blurred
            .chunks_exact(3)
            .map(|p| {
                let d: f64 = (0..3).map(|c| (p[c] as f64 - mean[c]).powi(2)).sum();
                d.sqrt() as f32
            })
            .collect();
        let max = s.iter().copied().fold(0.0f32, f32::max);
        if max > 0.0 {
            s.iter_mut().for_each(|v| *v /= max);
        }
        Image::new(w, h, 1, s)
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::saliency::<FrequencyTuned>(
            "frequency-tuned",
            env!("CARGO_PKG_VERSION"),
            "Frequency-tuned salient regions (Achanta et al., CVPR 2009): distance of each \
             blurred pixel from the mean colour in L*a*b*.",
        ),
    ],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_reference_colours() {
        // Reference values: CIE L*a*b* (D65) of sRGB white, black and pure red, as tabulated
        // by Bruce Lindbloom's calculator (L 100 / 0 / 53.24, a 80.09, b 67.20).
        let white = srgb_to_lab([1.0, 1.0, 1.0]);
        assert!((white[0] - 100.0).abs() < 0.01 && white[1].abs() < 0.01 && white[2].abs() < 0.01);
        assert!(srgb_to_lab([0.0, 0.0, 0.0])[0].abs() < 1e-4);
        let red = srgb_to_lab([1.0, 0.0, 0.0]);
        assert!(
            (red[0] - 53.24).abs() < 0.02
                && (red[1] - 80.09).abs() < 0.05
                && (red[2] - 67.20).abs() < 0.05
        );
    }

    #[test]
    fn odd_one_out_is_most_salient() {
        // A grey 32x32 field with one red 4x4 square: the square is the most salient area.
        let (w, h) = (32, 32);
        let mut data = vec![0.5f32; w * h * 3];
        for y in 20..24 {
            for x in 6..10 {
                let i = (y * w + x) * 3;
                data[i..i + 3].copy_from_slice(&[1.0, 0.0, 0.0]);
            }
        }
        let img = Image::new(w, h, 3, data).unwrap();
        let s = FrequencyTuned::build(FrequencyTunedParams::default())
            .unwrap()
            .saliency(&img)
            .unwrap();
        let argmax = s
            .data()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let (x, y) = (argmax % w, argmax / w);
        assert!(
            (6..10).contains(&x) && (20..24).contains(&y),
            "peak at ({x}, {y})"
        );
        assert_eq!(s.data().iter().copied().fold(0.0f32, f32::max), 1.0);
        assert!(s.get(0, 0, 0) < 0.1);
    }

    /// Through `sr_core::testing`: built from TOML as a pipeline gives it, called through the
    /// plugin ABI, the map held to the host's contract.
    #[test]
    fn runs_as_srhost_runs_it() {
        use sr_core::testing::{sample_image, PluginTest};
        use sr_core::StageKind;
        let t = PluginTest::new(SR_STAGES);
        let info = t.info(StageKind::Saliency, "frequency-tuned").unwrap();
        assert_eq!(info.params.len(), 2);
        let img = sample_image(40, 30);
        for params in ["", "blur = 3", "color_space = \"rgb\"\nblur = 1"] {
            let map = t.saliency("frequency-tuned", params, &img).unwrap();
            assert_eq!(
                (map.width, map.height, map.channels),
                (40, 30, 1),
                "{params}"
            );
        }
        // The sample's bright square (columns 5..13, rows 15..21) holds the maximum.
        let map = t.saliency("frequency-tuned", "", &img).unwrap();
        let peak = map
            .data()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert!(
            (5..13).contains(&(peak % 40)) && (15..21).contains(&(peak / 40)),
            "{peak}"
        );
        // What `srhost check` would say about a typo, a wrong type and a bad value.
        let e = t
            .saliency("frequency-tuned", "blurr = 3", &img)
            .unwrap_err();
        assert!(
            e.message.contains("unknown key") && e.help.contains("did you mean `blur`?"),
            "{e}"
        );
        let e = t
            .saliency("frequency-tuned", "blur = \"3\"", &img)
            .unwrap_err();
        assert!(e.message.contains("expected an integer"), "{e}");
        let e = t.saliency("frequency-tuned", "blur = 4", &img).unwrap_err();
        assert!(e.message.contains("`blur` must be 1, 3 or 5, got 4"), "{e}");
        assert!(t.saliency("no-such-stage", "", &img).is_err());
    }

    #[test]
    fn bad_params_are_named() {
        let e = FrequencyTuned::build(FrequencyTunedParams {
            blur: 4,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.message.contains("`blur` must be 1, 3 or 5, got 4"), "{e}");
    }
}
