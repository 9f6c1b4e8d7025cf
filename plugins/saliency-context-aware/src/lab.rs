//! sRGB to CIE L*a*b* as Matlab's `makecform('srgb2lab')` does (an ICC pipeline), which is
//! not the D65 `rgb2lab`: the sRGB tone curve, the profile's D50-adapted primaries, Bradford
//! adaptation from D50 to the ICC 16-bit white, then XYZ to Lab relative to that white.
//! Constants from the reference set's notes (golden/ca/README.md).
//!
//! Consequence that matters for saliency: grey pixels keep a tiny non-zero a*/b* (a* up to
//! about 0.019), which a per-channel min-max then stretches.

/// The sRGB electro-optical transfer function (IEC 61966-2-1).
fn linearise(v: f64) -> f64 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// Rows R, G, B of the profile's colorants (XYZ, D50-adapted), in 1/65536.
const PRIMARIES: [[f64; 3]; 3] = [
    [28578.0, 14581.0, 912.0],
    [25241.0, 46981.0, 6362.0],
    [9376.0, 3972.0, 46799.0],
];
const D50: [f64; 3] = [0.9642, 1.0, 0.8251];
/// The ICC PCS white in u1.15 fixed point: 0x7b6b, 0x8000, 0x6996 over 0x8000.
const ICC_WHITE: [f64; 3] = [31595.0 / 32768.0, 1.0, 27030.0 / 32768.0];
const BRADFORD: [[f64; 3]; 3] = [
    [0.8951, 0.2664, -0.1614],
    [-0.7502, 1.7135, 0.0367],
    [0.0389, -0.0685, 1.0296],
];

fn mul(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    [0, 1, 2].map(|i| [0, 1, 2].map(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ]
}

/// The linear map from linear RGB to adapted XYZ (3 x 3).
pub fn rgb_to_xyz() -> [[f64; 3]; 3] {
    // XYZ = [R G B] * P (rows are the colorants): as a column transform, P^T.
    let p: [[f64; 3]; 3] = [0, 1, 2].map(|i| [0, 1, 2].map(|j| PRIMARIES[j][i] / 65536.0));
    let src = mul(&BRADFORD, D50);
    let dst = mul(&BRADFORD, ICC_WHITE);
    let diag = [
        [dst[0] / src[0], 0.0, 0.0],
        [0.0, dst[1] / src[1], 0.0],
        [0.0, 0.0, dst[2] / src[2]],
    ];
    let adapt = matmul(&inverse(&BRADFORD), &matmul(&diag, &BRADFORD));
    matmul(&adapt, &p)
}

/// XYZ relative to the ICC white to L*a*b*.
fn xyz_to_lab(xyz: [f64; 3]) -> [f64; 3] {
    let f = |t: f64| {
        let d = 6.0 / 29.0;
        if t > d * d * d {
            t.cbrt()
        } else {
            t / (3.0 * d * d) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (
        f(xyz[0] / ICC_WHITE[0]),
        f(xyz[1] / ICC_WHITE[1]),
        f(xyz[2] / ICC_WHITE[2]),
    );
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Convert interleaved sRGB values in [0, 1] to L*a*b*, in place.
pub fn srgb_to_lab(rgb: &mut [f64]) {
    let m = rgb_to_xyz();
    for px in rgb.chunks_exact_mut(3) {
        let lin = [linearise(px[0]), linearise(px[1]), linearise(px[2])];
        let lab = xyz_to_lab(mul(&m, lin));
        px.copy_from_slice(&lab);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_maps_to_l100_and_grey_keeps_a_small_chroma() {
        let mut white = [1.0, 1.0, 1.0];
        srgb_to_lab(&mut white);
        // The colorant sum equals the D50 white to 1e-4 (ICC rounding), so white is
        // L* = 100 with |a*|, |b*| below 0.05, but not exactly 0.
        assert!((white[0] - 100.0).abs() < 0.05, "{white:?}");
        assert!(white[1].abs() < 0.05 && white[2].abs() < 0.05, "{white:?}");
        let mut grey = [0.5, 0.5, 0.5];
        srgb_to_lab(&mut grey);
        assert!(grey[1] != 0.0 && grey[1].abs() < 0.05, "{grey:?}");
        let mut black = [0.0, 0.0, 0.0];
        srgb_to_lab(&mut black);
        assert!(black.iter().all(|v| v.abs() < 1e-12));
    }
}
