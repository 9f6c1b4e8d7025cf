//! `saliency.itti`: the saliency model of Itti, Koch and Niebur, "A model of saliency-based
//! visual attention for rapid scene analysis", PAMI 20(11), 1998.
//!
//! - Dyadic Gaussian pyramids, levels 0-8 (5-tap binomial blur, then subsampling by 2).
//! - Features: intensity; red-green and blue-yellow double opponency (hue decoupled from
//!   intensity where intensity exceeds a tenth of its maximum); orientation from Gabor
//!   filters at 0, 45, 90 and 135 degrees on the intensity pyramid.
//! - Centre-surround differences between centre levels c in {2, 3, 4} and surround levels
//!   s = c + {3, 4} (the surround interpolated to the centre's size): 42 feature maps.
//! - N(.): each map scaled to [0, 1], then multiplied by (1 - mean of its other local
//!   maxima)^2, which promotes maps with one strong peak.
//! - Conspicuity maps summed across scales at level 4, normalised, averaged; the result is
//!   resized to the input's size (bilinear) and scaled to [0, 1].

use serde::{Deserialize, Serialize};
use sr_core::{Error, Image, Params, Result, Saliency, SaliencyStage, StageDef};

#[derive(Clone, Debug, PartialEq)]
struct Map {
    w: usize,
    h: usize,
    d: Vec<f32>,
}

impl Map {
    fn new(w: usize, h: usize) -> Map {
        Map {
            w,
            h,
            d: vec![0.0; w * h],
        }
    }
    fn at(&self, x: isize, y: isize) -> f32 {
        // Mirror at the borders.
        let m = |v: isize, n: usize| -> usize {
            let n = n as isize;
            let v = if v < 0 {
                -v - 1
            } else if v >= n {
                2 * n - v - 1
            } else {
                v
            };
            v.clamp(0, n - 1) as usize
        };
        self.d[m(y, self.h) * self.w + m(x, self.w)]
    }
}

const BINOMIAL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Blur with the 5-tap binomial kernel, then keep every other pixel.
fn reduce(m: &Map) -> Map {
    let (w2, h2) = (m.w.div_ceil(2).max(1), m.h.div_ceil(2).max(1));
    let mut tmp = Map::new(w2, m.h);
    for y in 0..m.h {
        for x in 0..w2 {
            tmp.d[y * w2 + x] = (0..5)
                .map(|k| BINOMIAL[k] * m.at(2 * x as isize + k as isize - 2, y as isize))
                .sum();
        }
    }
    let mut out = Map::new(w2, h2);
    for y in 0..h2 {
        for x in 0..w2 {
            out.d[y * w2 + x] = (0..5)
                .map(|k| BINOMIAL[k] * tmp.at(x as isize, 2 * y as isize + k as isize - 2))
                .sum();
        }
    }
    out
}

fn pyramid(base: Map, levels: usize) -> Vec<Map> {
    let mut p = vec![base];
    for _ in 1..levels {
        let next = reduce(p.last().unwrap());
        p.push(next);
    }
    p
}

/// Bilinear resize (pixel centres aligned).
fn resize(m: &Map, w: usize, h: usize) -> Map {
    let mut out = Map::new(w, h);
    let (sx, sy) = (m.w as f32 / w as f32, m.h as f32 / h as f32);
    for y in 0..h {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (m.h - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(m.h - 1);
        for x in 0..w {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (m.w - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(m.w - 1);
            let v = |xx: usize, yy: usize| m.d[yy * m.w + xx];
            out.d[y * w + x] = (1.0 - ty) * ((1.0 - tx) * v(x0, y0) + tx * v(x1, y0))
                + ty * ((1.0 - tx) * v(x0, y1) + tx * v(x1, y1));
        }
    }
    out
}

/// The magnitude of a complex Gabor filter (sigma 2, wavelength 4 px, 9 x 9) at angle `theta`.
fn gabor(m: &Map, theta: f32) -> Map {
    const R: isize = 4;
    let (sigma, lambda) = (2.0f32, 4.0f32);
    let (c, s) = (theta.cos(), theta.sin());
    let mut kr = vec![];
    let mut ki = vec![];
    for dy in -R..=R {
        for dx in -R..=R {
            let (x, y) = (dx as f32, dy as f32);
            let u = x * c + y * s;
            let g = (-(x * x + y * y) / (2.0 * sigma * sigma)).exp();
            let ph = 2.0 * std::f32::consts::PI * u / lambda;
            kr.push(g * ph.cos());
            ki.push(g * ph.sin());
        }
    }
    // Zero-mean real part (no response to flat regions).
    let mean = kr.iter().sum::<f32>() / kr.len() as f32;
    kr.iter_mut().for_each(|v| *v -= mean);
    let mut out = Map::new(m.w, m.h);
    for y in 0..m.h as isize {
        for x in 0..m.w as isize {
            let (mut re, mut im) = (0.0, 0.0);
            let mut k = 0;
            for dy in -R..=R {
                for dx in -R..=R {
                    let v = m.at(x + dx, y + dy);
                    re += kr[k] * v;
                    im += ki[k] * v;
                    k += 1;
                }
            }
            out.d[y as usize * m.w + x as usize] = (re * re + im * im).sqrt();
        }
    }
    out
}

/// N(.): scale to [0, 1], then weight by (1 - mean of the other local maxima)^2.
fn normalise(m: &Map) -> Map {
    let (lo, hi) =
        m.d.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
    if !(hi > lo) {
        return Map::new(m.w, m.h);
    }
    let scaled: Vec<f32> = m.d.iter().map(|v| (v - lo) / (hi - lo)).collect();
    let s = Map {
        w: m.w,
        h: m.h,
        d: scaled,
    };
    let mut maxima = vec![];
    for y in 0..s.h as isize {
        for x in 0..s.w as isize {
            let v = s.at(x, y);
            if v <= 0.0 {
                continue;
            }
            let is_max = (-1..=1)
                .all(|dy| (-1..=1).all(|dx| (dx == 0 && dy == 0) || s.at(x + dx, y + dy) <= v));
            if is_max {
                maxima.push(v);
            }
        }
    }
    // The global maximum (1.0) is excluded once; the mean of the others.
    if let Some(i) = maxima.iter().position(|&v| v >= 1.0) {
        maxima.swap_remove(i);
    }
    let mbar = if maxima.is_empty() {
        0.0
    } else {
        maxima.iter().sum::<f32>() / maxima.len() as f32
    };
    let wgt = (1.0 - mbar) * (1.0 - mbar);
    Map {
        w: s.w,
        h: s.h,
        d: s.d.iter().map(|v| v * wgt).collect(),
    }
}

fn abs_diff(a: &Map, b: &Map) -> Map {
    let b = resize(b, a.w, a.h);
    Map {
        w: a.w,
        h: a.h,
        d: a.d.iter().zip(&b.d).map(|(x, y)| (x - y).abs()).collect(),
    }
}

fn add_into(acc: &mut Map, m: &Map) {
    let r = resize(m, acc.w, acc.h);
    acc.d.iter_mut().zip(&r.d).for_each(|(a, b)| *a += b);
}

const CENTRES: [usize; 3] = [2, 3, 4];
const DELTAS: [usize; 2] = [3, 4];

/// Across-scale sum at level 4 of N(|F(c) - F(s)|) over the six centre-surround pairs.
fn conspicuity(p: &[Map], q: Option<&[Map]>) -> Map {
    let mut acc = Map::new(p[4].w, p[4].h);
    for c in CENTRES {
        for d in DELTAS {
            let s = c + d;
            // Colour: centre-surround of the opponent map, |(R-G)(c) - (R-G)(s)|. (The paper
            // writes the surround as (G-R)(s); taken literally that adds the two and responds
            // to every item alike. Walther and Koch's SaliencyToolbox reads it as the
            // difference, as here.)
            let fm = match q {
                None => abs_diff(&p[c], &p[s]),
                Some(q) => {
                    let centre = Map {
                        w: p[c].w,
                        h: p[c].h,
                        d: p[c].d.iter().zip(&q[c].d).map(|(a, b)| a - b).collect(),
                    };
                    let surround = Map {
                        w: p[s].w,
                        h: p[s].h,
                        d: p[s].d.iter().zip(&q[s].d).map(|(a, b)| a - b).collect(),
                    };
                    abs_diff(&centre, &surround)
                }
            };
            add_into(&mut acc, &normalise(&fm));
        }
    }
    acc
}

/// The largest working size (the context-aware stage's too).
pub const MAX_DIM: usize = 2048;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IttiParams {
    /// Working size: the longer side before the pyramids (the paper uses 640 x 480 inputs).
    pub max_dim: usize,
}

impl Default for IttiParams {
    fn default() -> Self {
        IttiParams { max_dim: 256 }
    }
}

impl Params for IttiParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[(
        "max_dim",
        "working size: the longer side before the pyramids (>= 128: level 8 needs it)",
    )];
}

/// The stage.
pub struct Itti {
    max_dim: usize,
}

impl SaliencyStage for Itti {
    type Params = IttiParams;
    fn build(p: IttiParams) -> Result<Self> {
        if p.max_dim < 128 {
            return Err(Error::params(format!(
                "`max_dim` must be >= 128 (nine pyramid levels), got {}",
                p.max_dim
            )));
        }
        if p.max_dim > MAX_DIM {
            return Err(Error::params(format!(
                "`max_dim` must be at most {MAX_DIM} (the working size; every photo is resized to it), got {}",
                p.max_dim
            )));
        }
        Ok(Itti { max_dim: p.max_dim })
    }
}

impl Saliency for Itti {
    fn saliency(&self, input: &Image) -> Result<Image> {
        if input.channels != 1 && input.channels != 3 {
            return Err(Error::input(format!(
                "Itti-Koch saliency takes 1 or 3 channels, got {}",
                input.channels
            )));
        }
        let (w0, h0) = (input.width, input.height);
        let scale = self.max_dim as f32 / w0.max(h0) as f32;
        let (w, h) = (
            ((w0 as f32 * scale).round() as usize).max(1),
            ((h0 as f32 * scale).round() as usize).max(1),
        );
        let channel = |c: usize| {
            let m = Map {
                w: w0,
                h: h0,
                d: (0..w0 * h0)
                    .map(|i| input.data()[i * input.channels + c.min(input.channels - 1)])
                    .collect(),
            };
            resize(&m, w, h)
        };
        let (r, g, b) = (channel(0), channel(1), channel(2));
        let n = w * h;
        let int: Vec<f32> = (0..n).map(|i| (r.d[i] + g.d[i] + b.d[i]) / 3.0).collect();
        let imax = int.iter().cloned().fold(0.0, f32::max);
        // Hue decoupled from intensity: r, g, b divided by I where I > max / 10, else 0.
        let (mut rr, mut gg, mut bb, mut yy) = (
            Map::new(w, h),
            Map::new(w, h),
            Map::new(w, h),
            Map::new(w, h),
        );
        for i in 0..n {
            if int[i] > imax / 10.0 {
                let (rn, gn, bn) = (r.d[i] / int[i], g.d[i] / int[i], b.d[i] / int[i]);
                rr.d[i] = (rn - (gn + bn) / 2.0).max(0.0);
                gg.d[i] = (gn - (rn + bn) / 2.0).max(0.0);
                bb.d[i] = (bn - (rn + gn) / 2.0).max(0.0);
                yy.d[i] = ((rn + gn) / 2.0 - (rn - gn).abs() / 2.0 - bn).max(0.0);
            }
        }
        let pi = pyramid(Map { w, h, d: int }, 9);
        let ci = conspicuity(&pi, None);
        let (pr, pg, pb, py) = (
            pyramid(rr, 9),
            pyramid(gg, 9),
            pyramid(bb, 9),
            pyramid(yy, 9),
        );
        let mut cc = conspicuity(&pr, Some(&pg));
        add_into(&mut cc, &conspicuity(&pb, Some(&py)));
        let mut co = Map::new(pi[4].w, pi[4].h);
        for k in 0..4 {
            let theta = k as f32 * std::f32::consts::PI / 4.0;
            // Only the centre and surround levels (2..=8) are read: levels 0 and 1, four
            // fifths of the filtering, are left as placeholders.
            let po: Vec<Map> = pi
                .iter()
                .enumerate()
                .map(|(l, m)| {
                    if l < CENTRES[0] {
                        Map::new(0, 0)
                    } else {
                        gabor(m, theta)
                    }
                })
                .collect();
            add_into(&mut co, &normalise(&conspicuity(&po, None)));
        }
        let mut s = normalise(&ci);
        for m in [normalise(&cc), normalise(&co)] {
            add_into(&mut s, &m);
        }
        let out = resize(&s, w0, h0);
        let (lo, hi) = out
            .d
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        Image::new(w0, h0, 1, out.d.iter().map(|v| (v - lo) / span).collect())
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::saliency::<Itti>(
            "itti",
            env!("CARGO_PKG_VERSION"),
            "Itti, Koch and Niebur (1998): centre-surround intensity, colour opponency and Gabor orientation across a 9-level pyramid.",
        ),
    ],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grey 256 x 256 image with a 6 x 6 field of items on a 32-px grid (a 32-px grey margin
    /// all round), one of them different; returns the image and the odd item's centre.
    fn field(
        odd: impl Fn(usize, usize, usize, usize) -> [f32; 3],
        normal: impl Fn(usize, usize, usize, usize) -> [f32; 3],
    ) -> (Image, (usize, usize)) {
        let (w, h) = (256, 256);
        let odd_cell = (4, 1);
        let mut d = vec![0.5f32; w * h * 3];
        for cy in 1..7 {
            for cx in 1..7 {
                for y in 0..32 {
                    for x in 0..32 {
                        let px = if (cx, cy) == odd_cell {
                            odd(x, y, cx, cy)
                        } else {
                            normal(x, y, cx, cy)
                        };
                        let i = ((cy * 32 + y) * w + cx * 32 + x) * 3;
                        if px[0] >= 0.0 {
                            d[i..i + 3].copy_from_slice(&px);
                        }
                    }
                }
            }
        }
        (
            Image::new(w, h, 3, d).unwrap(),
            (odd_cell.0 * 32 + 16, odd_cell.1 * 32 + 16),
        )
    }

    fn map(w: usize, h: usize, d: Vec<f32>) -> Map {
        Map { w, h, d }
    }

    // Hand-derived values for the building blocks (no independent Itti implementation runs
    // here: SMILER's IKN is GBVS's Matlab code with Matlab-only mex binaries).

    #[test]
    fn reduce_blurs_with_the_binomial_kernel_and_mirrors_at_the_border() {
        // [0, 16, 0, 0] -> output 0 reads taps -2..=2, mirrored to [16, 0, 0, 16, 0]:
        // (16 * 1 + 16 * 4) / 16 = 5; output 1 reads taps 0..=4 = [0, 16, 0, 0, 0]: 16 * 4 / 16 = 4.
        // A single row mirrors onto itself: the vertical pass keeps the values.
        let r = reduce(&map(4, 1, vec![0.0, 16.0, 0.0, 0.0]));
        assert_eq!((r.w, r.h, r.d), (2, 1, vec![5.0, 4.0]));
    }

    #[test]
    fn resize_aligns_pixel_centres() {
        // 2 -> 4 samples at source positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped).
        let r = resize(&map(2, 1, vec![0.0, 1.0]), 4, 1);
        assert_eq!(r.d, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn normalise_promotes_a_map_with_one_strong_peak() {
        // Peaks 10 and 4 on zeros: scaled to 1 and 0.4; the mean of the other local maxima is
        // 0.4, the weight (1 - 0.4)^2 = 0.36: outputs 0.36 and 0.144.
        let mut d = vec![0.0; 25];
        d[5 + 1] = 10.0;
        d[3 * 5 + 3] = 4.0;
        let n = normalise(&map(5, 5, d));
        let mut want = vec![0.0; 25];
        want[5 + 1] = 0.36;
        want[3 * 5 + 3] = 0.144;
        for (i, (g, w)) in n.d.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6, "{i}: {g} against {w}");
        }
        // One peak alone keeps its full weight; a flat map becomes zeros.
        let mut one = vec![0.0; 25];
        one[12] = 3.0;
        assert_eq!(normalise(&map(5, 5, one)).d[12], 1.0);
        assert!(normalise(&map(5, 5, vec![2.0; 25]))
            .d
            .iter()
            .all(|&v| v == 0.0));
    }

    fn peak(s: &Image) -> (usize, usize) {
        let i = s
            .data()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        (i % s.width, i / s.width)
    }

    fn near(p: (usize, usize), q: (usize, usize)) -> bool {
        (p.0 as isize - q.0 as isize).abs() <= 16 && (p.1 as isize - q.1 as isize).abs() <= 16
    }

    #[test]
    fn the_odd_colour_wins() {
        let disk = |colour: [f32; 3]| {
            move |x: usize, y: usize, _: usize, _: usize| {
                if (x as f32 - 15.5).powi(2) + (y as f32 - 15.5).powi(2) < 64.0 {
                    colour
                } else {
                    [-1.0; 3]
                }
            }
        };
        // Equal intensity (r + g + b) / 3: only the hue differs.
        let (img, at) = field(disk([0.8, 0.1, 0.1]), disk([0.1, 0.8, 0.1]));
        let s = Itti::build(IttiParams::default())
            .unwrap()
            .saliency(&img)
            .unwrap();
        assert!(
            near(peak(&s), at),
            "peak {:?}, odd item at {at:?}",
            peak(&s)
        );
    }

    #[test]
    fn the_odd_orientation_wins() {
        let bar = |vertical: bool| {
            move |x: usize, y: usize, _: usize, _: usize| {
                let (along, across) = if vertical { (y, x) } else { (x, y) };
                if (6..26).contains(&along) && (14..18).contains(&across) {
                    [0.95; 3]
                } else {
                    [-1.0; 3]
                }
            }
        };
        let (img, at) = field(bar(false), bar(true));
        let s = Itti::build(IttiParams::default())
            .unwrap()
            .saliency(&img)
            .unwrap();
        assert!(
            near(peak(&s), at),
            "peak {:?}, odd item at {at:?}",
            peak(&s)
        );
    }

    #[test]
    fn output_has_the_input_size_and_range() {
        let img = Image::new(
            300,
            200,
            3,
            (0..300 * 200 * 3)
                .map(|i| ((i * 7919) % 255) as f32 / 255.0)
                .collect(),
        )
        .unwrap();
        let s = Itti::build(IttiParams::default())
            .unwrap()
            .saliency(&img)
            .unwrap();
        assert_eq!((s.width, s.height, s.channels), (300, 200, 1));
        assert!(s.data().iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(Itti::build(IttiParams { max_dim: 64 }).is_err());
    }
}
