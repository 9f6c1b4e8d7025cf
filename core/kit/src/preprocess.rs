//! Image preprocessing as torchvision does it on PIL images:
//! `Resize(s, BILINEAR, antialias=True)` (shorter side to `s`, longer side
//! `int(s * long / short)`), `CenterCrop(h, w)` (offsets `round((H - h) / 2)` with Python's
//! round-half-to-even), `ToTensor` (`u8 / 255` in f32) and `Normalize` (`(x - mean) / std` in
//! f32).
//!
//! The resize reproduces Pillow's `ImagingResample` for the bilinear filter: a triangle
//! kernel widened by the scale when shrinking, normalised weights converted to 22-bit fixed
//! point, a horizontal pass then a vertical pass, each rounded and clipped to 8 bits.

use crate::error::{Error, Result};
use crate::stage::ModelInfo;
use crate::tensor::{Image, Tensor};

/// An 8-bit RGB image, row-major, interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's coefficients for one axis: for each output index, the first input index and
/// the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale; // bilinear support is 1
    let triangle = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as isize).max(0) as usize;
            let xmax = (((center + support + 0.5) as isize).min(in_size as isize) as usize)
                .saturating_sub(xmin);
            let mut k: Vec<f64> = (0..xmax)
                .map(|x| triangle((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let s = v * (1u32 << PRECISION_BITS) as f64;
                    (if s < 0.0 { s - 0.5 } else { s + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's antialiased bilinear resize of an RGB8 image (horizontal pass, then vertical).
pub fn resize_bilinear(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let horizontal = if out_w != w {
        let cx = coefficients(w, out_w);
        let mut out = vec![0u8; out_w * h * 3];
        for y in 0..h {
            for (xx, (xmin, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kv) in k.iter().enumerate() {
                        ss += img.data[(y * w + xmin + i) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * out_w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        Rgb8 {
            width: out_w,
            height: h,
            data: out,
        }
    } else {
        img.clone()
    };
    if out_h == h {
        return horizontal;
    }
    let cy = coefficients(h, out_h);
    let mut out = vec![0u8; out_w * out_h * 3];
    for (yy, (ymin, k)) in cy.iter().enumerate() {
        for x in 0..out_w {
            for c in 0..3 {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &kv) in k.iter().enumerate() {
                    ss += horizontal.data[((ymin + i) * out_w + x) * 3 + c] as i64 * kv as i64;
                }
                out[(yy * out_w + x) * 3 + c] = clip8(ss);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        data: out,
    }
}

/// Python's `round(x)` for `x = n / 2`: halves go to the even neighbour.
fn round_half_even_div2(n: usize) -> usize {
    let (q, r) = (n / 2, n % 2);
    if r == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// torchvision's `Resize(size)` output size for an int `size`: the shorter side becomes
/// `size`, the longer `int(size * long / short)`.
pub fn resized_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = (w.min(h), w.max(h));
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// The largest `resize` a model may declare (the shorter side before the centre crop).
pub const MAX_RESIZE: usize = 4096;

/// A model's `resize` for its `[C, H, W]` input: 0, or between the input's longer side and
/// [`MAX_RESIZE`]. Model backends check it when they load, so a bad value is a spec error.
pub fn check_resize(resize: usize, input_shape: &[usize]) -> Result<()> {
    let side = input_shape.iter().skip(1).copied().max().unwrap_or(0);
    if resize != 0 && (resize < side || resize > MAX_RESIZE) {
        return Err(Error::params(format!(
            "`resize` = {resize}: expected 0 (straight to the input size) or a shorter side from {side} (the model's input) to {MAX_RESIZE}"
        )));
    }
    Ok(())
}

/// Where a model's input comes from in a photo: the size the photo is resized to, the centre
/// crop's offset in it and the crop's (the input's) size, all `(width, height)` in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub resized: (usize, usize),
    pub left: usize,
    pub top: usize,
    pub size: (usize, usize),
}

/// The [`Crop`] of a `width` x `height` photo for `info`'s model: resize (if `info.resize >
/// 0`, else straight to the input size), centre crop.
pub fn crop_of(width: usize, height: usize, info: &ModelInfo) -> Result<Crop> {
    let (h, w) = match info.input_shape[..] {
        [3, h, w] => (h, w),
        _ => {
            return Err(Error::unsupported(format!(
                "model `{}`: input shape {:?}; only [3, H, W] RGB inputs are supported",
                info.name, info.input_shape
            )))
        }
    };
    let (rw, rh) = if info.resize == 0 {
        (w, h)
    } else {
        resized_size(width, height, info.resize)
    };
    let pixels = (rw as u64).saturating_mul(rh as u64);
    if pixels > MAX_RESIZED_PIXELS {
        return Err(Error::input(format!(
            "the {width}x{height} photo resized to a shorter side of {} would be {rw}x{rh}, over srhost's limit of {MAX_RESIZED_PIXELS} pixels",
            info.resize
        ))
        .with_help("the photo is too elongated for the model's resize and centre crop"));
    }
    if rw < w || rh < h {
        return Err(Error::input(format!(
            "image resized to {rw}x{rh} is smaller than the {w}x{h} crop"
        ))
        .with_help("raise the model's `resize`"));
    }
    Ok(Crop {
        resized: (rw, rh),
        left: round_half_even_div2(rw - w),
        top: round_half_even_div2(rh - h),
        size: (w, h),
    })
}

/// Resize (if `info.resize > 0`, else straight to the input size), centre crop.
/// Returns the crop as RGB8.
pub fn resize_and_crop(img: &Rgb8, info: &ModelInfo) -> Result<Rgb8> {
    let c = crop_of(img.width, img.height, info)?;
    let ((rw, rh), (w, h), (left, top)) = (c.resized, c.size, (c.left, c.top));
    let resized = resize_bilinear(img, rw, rh);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in top..top + h {
        data.extend_from_slice(
            &resized.data[(y * resized.width + left) * 3..(y * resized.width + left + w) * 3],
        );
    }
    Ok(Rgb8 {
        width: w,
        height: h,
        data,
    })
}

/// `ToTensor` + `Normalize`: a `1 x 3 x H x W` tensor, `(u8 / 255 - mean) / std` in f32.
pub fn normalise(crop: &Rgb8, mean: &[f32], std: &[f32]) -> Result<Tensor> {
    if mean.len() != 3 || std.len() != 3 {
        return Err(Error::params(format!(
            "mean and std need 3 values each, got {} and {}",
            mean.len(),
            std.len()
        )));
    }
    // (x - m) / s is monotonic in x, so it is finite on [0, 1] if it is at both ends.
    for c in 0..3 {
        let (lo, hi) = ((0.0 - mean[c]) / std[c], (1.0 - mean[c]) / std[c]);
        if !(lo.is_finite() && hi.is_finite()) || std[c] == 0.0 {
            return Err(Error::params(format!(
                "mean {} and std {} of channel {c} turn pixel values in [0, 1] into {lo} .. {hi}: the model's input would not be finite",
                mean[c], std[c]
            ))
            .with_help("check `model.mean` and `model.std`: values on [0, 1], std above 0"));
        }
    }
    let (w, h) = (crop.width, crop.height);
    let mut chw = vec![0f32; 3 * h * w];
    for i in 0..h * w {
        for c in 0..3 {
            let x = crop.data[i * 3 + c] as f32 / 255.0f32;
            chw[c * h * w + i] = (x - mean[c]) / std[c];
        }
    }
    Tensor::new(vec![1, 3, h, w], chw)
}

/// The crop as an `H x W x 3` image in [0, 1] (what renderers draw).
pub fn to_image(crop: &Rgb8) -> Result<Image> {
    Image::new(
        crop.width,
        crop.height,
        3,
        crop.data.iter().map(|&v| v as f32 / 255.0).collect(),
    )
}

/// The full preprocessing of a model's input: `(normalised 1 x 3 x H x W tensor, crop)`.
pub fn preprocess(img: &Rgb8, info: &ModelInfo) -> Result<(Tensor, Rgb8)> {
    let crop = resize_and_crop(img, info)?;
    Ok((normalise(&crop, &info.mean, &info.std)?, crop))
}

/// What a photo may be before srhost decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoLimits {
    /// The most pixels (width x height) a photo may have; checked from its header, before
    /// anything is decoded (`run.max_pixels`).
    pub max_pixels: u64,
    /// Decode a JPEG without its end-of-image marker or a PNG without its IEND chunk (a
    /// truncated download) instead of refusing it (`run.allow_truncated`).
    pub allow_truncated: bool,
}

/// 50 megapixels: more than any camera photo a classifier is shown, and 200 MB as 8-bit RGB.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

impl Default for PhotoLimits {
    fn default() -> Self {
        PhotoLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            allow_truncated: false,
        }
    }
}

/// The most pixels a photo may have once resized for a model (before the centre crop): 100
/// megapixels. A very elongated photo (1 x 1,000,000) resized to a shorter side of 256 would
/// be far larger.
pub const MAX_RESIZED_PIXELS: u64 = 100_000_000;

/// Decode an image file to 8-bit RGB with the default [`PhotoLimits`]. (Feature `decode`:
/// stages never decode files, so plugins build without the decoders.)
#[cfg(feature = "decode")]
pub fn load_photo(path: &std::path::Path) -> Result<Rgb8> {
    load_photo_limited(path, &PhotoLimits::default())
}

/// Decode an image file to 8-bit RGB within `limits`. A corrupt, truncated or oversized file
/// is an error naming it and saying what was expected.
#[cfg(feature = "decode")]
pub fn load_photo_limited(path: &std::path::Path, limits: &PhotoLimits) -> Result<Rgb8> {
    let bytes = crate::io::read_bounded(path, crate::io::MAX_PHOTO_BYTES, "a photo")?;
    decode_photo(&bytes, limits, &path.display().to_string())
}

/// A photo's `(width, height)`, from its header only (read through a bounded reader, a
/// regular file only).
#[cfg(feature = "decode")]
pub fn photo_size(path: &std::path::Path) -> Result<(usize, usize)> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    if !meta.is_file() {
        return Err(crate::Error::input(format!(
            "{}: a photo must be a regular file",
            path.display()
        )));
    }
    let f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let bounded = std::io::BufReader::new(f.take(crate::io::MAX_PHOTO_BYTES));
    let (w, h) = image::ImageReader::new(bounded)
        .with_guessed_format()
        .map_err(|e| crate::Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| {
            crate::Error::input(format!(
                "{}: cannot read the image's size: {e}",
                path.display()
            ))
        })?;
    Ok((w as usize, h as usize))
}

/// [`load_photo_limited`] on a file's bytes; `what` names it in errors.
#[cfg(feature = "decode")]
pub fn decode_photo(bytes: &[u8], limits: &PhotoLimits, what: &str) -> Result<Rgb8> {
    let bad = |m: String| crate::Error::input(format!("{what}: {m}"));
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| crate::Error::io(what, e))
    };
    let format = reader()?.format();
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| bad(format!("cannot decode the image: {e}")))?;
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(bad(format!(
            "the image is {w}x{h} ({pixels} pixels); srhost decodes at most {} pixels",
            limits.max_pixels
        ))
        .with_help("raise run.max_pixels if the photo is meant to be this large"));
    }
    if !limits.allow_truncated {
        let end = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(&bytes[..0], |i| &bytes[..=i]);
        let complete = match format {
            Some(image::ImageFormat::Jpeg) => end.ends_with(&[0xFF, 0xD9]),
            Some(image::ImageFormat::Png) => {
                bytes.len() >= 12 && bytes[bytes.len() - 12..].windows(4).any(|c| c == b"IEND")
            }
            _ => true,
        };
        if !complete {
            return Err(bad(format!(
                "the {} file is truncated (it does not end with its end marker)",
                format.map_or("image".into(), |f| format!("{f:?}").to_uppercase())
            ))
            .with_help("a truncated file decodes to a partly grey picture; set run.allow_truncated = true to take it anyway"));
        }
    }
    if format == Some(image::ImageFormat::Jpeg) {
        return decode_jpeg(bytes, what);
    }
    let mut r = reader()?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(w);
    l.max_image_height = Some(h);
    // The decoded image and the decoder's own buffers.
    l.max_alloc = Some(pixels.saturating_mul(16).max(64 << 20));
    r.limits(l);
    let img = r
        .decode()
        .map_err(|e| bad(format!("cannot decode the image: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    Ok(Rgb8 {
        width: w as usize,
        height: h as usize,
        data: img.into_raw(),
    })
}

/// A JPEG (its size already checked) as PIL decodes it: libjpeg-turbo's decoder with its
/// defaults (accurate integer IDCT, fancy upsampling), to RGB (a grey JPEG's value in all three
/// channels, as PIL's `convert("RGB")`).
#[cfg(feature = "decode")]
fn decode_jpeg(bytes: &[u8], what: &str) -> Result<Rgb8> {
    // libjpeg's fatal errors arrive as an unwinding panic (mozjpeg's error handler), and not
    // every mozjpeg call catches it (a corrupt file found by fuzzing unwound out of it):
    // catch it here, around the whole decode.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_jpeg_inner(bytes, what)
    }))
    .unwrap_or_else(|payload| {
        Err(crate::Error::input(format!(
            "{what}: cannot decode the JPEG: {}",
            crate::error::panic_message(payload.as_ref())
        )))
    })
}

#[cfg(feature = "decode")]
fn decode_jpeg_inner(bytes: &[u8], what: &str) -> Result<Rgb8> {
    let bad =
        |e: std::io::Error| crate::Error::input(format!("{what}: cannot decode the JPEG: {e}"));
    let d = mozjpeg::Decompress::new_mem(bytes).map_err(bad)?;
    let (w, h) = d.size();
    let mut s = d.rgb().map_err(bad)?;
    let data: Vec<[u8; 3]> = s.read_scanlines().map_err(bad)?;
    s.finish().map_err(bad)?;
    if data.len() != w * h {
        return Err(crate::Error::input(format!(
            "{what}: the JPEG decoded to {} pixels, its header says {w}x{h}",
            data.len()
        )));
    }
    Ok(Rgb8 {
        width: w,
        height: h,
        data: data.into_iter().flatten().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_normalisation_that_makes_the_input_infinite_is_refused() {
        let img = Rgb8 {
            width: 1,
            height: 1,
            data: vec![0, 128, 255],
        };
        assert!(normalise(&img, &[0.5; 3], &[0.25; 3]).is_ok());
        let e = normalise(&img, &[1e38, 0.5, 0.5], &[1e-3, 0.25, 0.25]).unwrap_err();
        assert!(
            e.message.starts_with(
                "mean 100000000000000000000000000000000000000 and std 0.001 of channel 0"
            ),
            "{e}"
        );
        assert!(normalise(&img, &[0.5; 3], &[0.25, 0.0, 0.25]).is_err());
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        // chelsea.png 451 x 300: int(256 * 451 / 300) = int(384.85) = 384.
        assert_eq!(resized_size(451, 300, 256), (384, 256));
        assert_eq!(resized_size(427, 640, 256), (256, 383)); // int(383.6)
        assert_eq!(resized_size(600, 400, 256), (384, 256));
        // round(160 / 2) = 80; round(159 / 2) = round(79.5) = 80 (even); round(161 / 2) = 80.
        assert_eq!(round_half_even_div2(160), 80);
        assert_eq!(round_half_even_div2(159), 80);
        assert_eq!(round_half_even_div2(161), 80);
        assert_eq!(round_half_even_div2(157), 78); // round(78.5) = 78
    }

    #[test]
    fn resize_of_a_constant_image_is_constant_and_identity_is_exact() {
        let img = Rgb8 {
            width: 7,
            height: 5,
            data: vec![200; 7 * 5 * 3],
        };
        let r = resize_bilinear(&img, 3, 2);
        assert!(r.data.iter().all(|&v| v == 200));
        let ramp = Rgb8 {
            width: 4,
            height: 1,
            data: (0..12).map(|v| v as u8 * 10).collect(),
        };
        assert_eq!(resize_bilinear(&ramp, 4, 1), ramp);
    }

    #[test]
    fn halving_averages_pairs() {
        // Shrinking by 2 with the widened triangle: weights 1/8, 3/8, 3/8, 1/8 around each
        // output centre (edge taps renormalised). For a row 0, 0, 80, 80: out[0] = (0*3 + 0*3
        // + 80*1) / 7 = 11.43 -> 11; out[1] = (0*1 + 80*3 + 80*3) / 7 = 68.57 -> 69.
        let row = Rgb8 {
            width: 4,
            height: 1,
            data: [0u8, 0, 80, 80].iter().flat_map(|&v| [v; 3]).collect(),
        };
        let r = resize_bilinear(&row, 2, 1);
        assert_eq!(&r.data[..], &[11, 11, 11, 69, 69, 69]);
    }
}
