//! Matlab's `imresize` for float images (bilinear and bicubic), as the reference saliency
//! code relies on it: a kernel widened by the scale when shrinking (antialiasing), weights
//! normalised per output sample, symmetric (mirror) padding at the borders, the dimension
//! with the smaller scale resized first, output sizes rounded up.

/// The interpolation kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Triangle, width 2.
    Bilinear,
    /// Keys cubic with a = -0.5, width 4.
    Bicubic,
}

impl Kernel {
    fn width(self) -> f64 {
        match self {
            Kernel::Bilinear => 2.0,
            Kernel::Bicubic => 4.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        match self {
            Kernel::Bilinear => {
                if (-1.0..0.0).contains(&x) {
                    x + 1.0
                } else if (0.0..=1.0).contains(&x) {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Kernel::Bicubic => {
                let a = x.abs();
                let (a2, a3) = (a * a, a * a * a);
                if a <= 1.0 {
                    1.5 * a3 - 2.5 * a2 + 1.0
                } else if a <= 2.0 {
                    -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output index: the input indices (0-based) and their weights.
fn contributions(
    in_len: usize,
    out_len: usize,
    scale: f64,
    kernel: Kernel,
) -> Vec<Vec<(usize, f64)>> {
    let antialias = scale < 1.0;
    let kw = if antialias {
        kernel.width() / scale
    } else {
        kernel.width()
    };
    let h = |x: f64| {
        if antialias {
            scale * kernel.eval(scale * x)
        } else {
            kernel.eval(x)
        }
    };
    let p = kw.ceil() as isize + 2;
    (1..=out_len)
        .map(|x| {
            let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (u - kw / 2.0).floor() as isize;
            let raw: Vec<(isize, f64)> = (0..p)
                .map(|j| (left + j, h(u - (left + j) as f64)))
                .collect();
            let sum: f64 = raw.iter().map(|(_, w)| w).sum();
            raw.into_iter()
                .filter(|(_, w)| *w != 0.0)
                .map(|(i, w)| {
                    // Mirror: [1..n, n..1] repeated, 1-based in Matlab.
                    let n = in_len as isize;
                    let m = (i - 1).rem_euclid(2 * n);
                    let idx = if m < n { m } else { 2 * n - 1 - m };
                    (idx as usize, w / sum)
                })
                .collect()
        })
        .collect()
}

/// A multi-channel float image, row-major `h x w x c`.
#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f64>,
}

impl Img {
    pub fn at(&self, y: usize, x: usize, ch: usize) -> f64 {
        self.data[(y * self.w + x) * self.c + ch]
    }
}

fn resize_axis(img: &Img, axis: usize, out_len: usize, scale: f64, kernel: Kernel) -> Img {
    let in_len = if axis == 0 { img.h } else { img.w };
    let coeffs = contributions(in_len, out_len, scale, kernel);
    let (oh, ow) = if axis == 0 {
        (out_len, img.w)
    } else {
        (img.h, out_len)
    };
    let mut out = vec![0f64; oh * ow * img.c];
    for y in 0..oh {
        for x in 0..ow {
            let o = if axis == 0 { y } else { x };
            for ch in 0..img.c {
                let mut acc = 0.0;
                for &(i, wgt) in &coeffs[o] {
                    let v = if axis == 0 {
                        img.at(i, x, ch)
                    } else {
                        img.at(y, i, ch)
                    };
                    acc += wgt * v;
                }
                out[(y * ow + x) * img.c + ch] = acc;
            }
        }
    }
    Img {
        h: oh,
        w: ow,
        c: img.c,
        data: out,
    }
}

/// `imresize(img, scale)`: output `ceil(scale * size)`, both axes by the scalar scale.
pub fn by_scale(img: &Img, scale: f64, kernel: Kernel) -> Img {
    let oh = (scale * img.h as f64 - 1e-9).ceil().max(1.0) as usize;
    let ow = (scale * img.w as f64 - 1e-9).ceil().max(1.0) as usize;
    resize(img, [oh, ow], [scale, scale], kernel)
}

/// `imresize(img, [rows cols])`: the scale of each axis is `out / in`; sizes are rounded up.
pub fn to_size(img: &Img, rows: f64, cols: f64, kernel: Kernel) -> Img {
    let (oh, ow) = (rows.ceil() as usize, cols.ceil() as usize);
    resize(
        img,
        [oh, ow],
        [rows / img.h as f64, cols / img.w as f64],
        kernel,
    )
}

fn resize(img: &Img, out: [usize; 2], scale: [f64; 2], kernel: Kernel) -> Img {
    // The axis with the smaller scale first (rows first on ties), as Matlab does.
    let order = if scale[1] < scale[0] { [1, 0] } else { [0, 1] };
    let mut cur = img.clone();
    for axis in order {
        let in_len = if axis == 0 { cur.h } else { cur.w };
        if out[axis] == in_len && scale[axis] == 1.0 {
            continue;
        }
        cur = resize_axis(&cur, axis, out[axis], scale[axis], kernel);
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_and_mirror_at_the_border() {
        // Halving a 4-sample row with bilinear antialiasing: kernel width 4, taps at
        // u - 2 .. u + 2 with triangle weights scaled by 1/2 (hand-derived):
        // out[0]: u = 1.5, taps x = 0..3 (1-based, x = 0 mirrors to 1) with weights
        // h(1.5), h(0.5), h(-0.5), h(-1.5) = 0.125, 0.375, 0.375, 0.125.
        let c = contributions(4, 2, 0.5, Kernel::Bilinear);
        let w: Vec<f64> = c[0].iter().map(|(_, w)| *w).collect();
        let idx: Vec<usize> = c[0].iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![0, 0, 1, 2]);
        for (a, b) in w.iter().zip([0.125, 0.375, 0.375, 0.125]) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn same_size_is_identity_and_sizes_round_up() {
        let img = Img {
            h: 3,
            w: 5,
            c: 1,
            data: (0..15).map(|v| v as f64).collect(),
        };
        assert_eq!(to_size(&img, 3.0, 5.0, Kernel::Bilinear), img);
        // The 1/4 level of a 250-px side is 63 px (ceil), not 62.
        let wide = Img {
            h: 1,
            w: 250,
            c: 1,
            data: vec![0.5; 250],
        };
        let q = by_scale(&wide, 0.25, Kernel::Bicubic);
        assert_eq!(q.w, 63);
        assert!(q.data.iter().all(|v| (v - 0.5).abs() < 1e-12));
    }
}
