//! `run.fixations`: where people looked at each photo, for the saliency benchmark's fixation
//! metrics (NSS, AUC-Judd, AUC-Borji, shuffled AUC; `sr_core::metrics::saliency`).
//!
//! A folder holds one file per image, found as `relevance.file` finds its maps: the image's
//! path under its input folder, else its stem, with `.png`, `.csv` or `.txt`:
//! - a **fixation map** (`.png`, the photo's size): every pixel that is not black is a fixation
//!   (the MIT saliency benchmark's binary fixation maps);
//! - a **point list** (`.csv`, `.txt`): one fixation per line, `x,y` (or `x y`), pixels of the
//!   photo from the top left, 0-based; fractions are floored, `#` starts a comment, and a first
//!   line that is not numbers is a header.
//!
//! The points are in the photo's pixels; the maps are compared at the model's input, so each
//! point goes through the model's resize and centre crop (points cropped away are dropped, and
//! counted). The shuffled AUC's negatives are the fixations of the next images of the run (up
//! to [`SHUFFLED_NEIGHBOURS`], in the run's order, wrapping around), each placed by its
//! position relative to its own photo's size.

use sr_core::{Error, Result};
use std::path::{Path, PathBuf};

/// The largest fixation file srhost reads.
pub const MAX_FIXATION_BYTES: u64 = 64 << 20;

/// The most fixations an image may have (a point list's lines).
pub const MAX_FIXATIONS: usize = 1_000_000;

/// How many other images lend their fixations to an image's shuffled AUC.
pub const SHUFFLED_NEIGHBOURS: usize = 10;

/// The candidate files for an image, in the order they are tried.
pub fn candidates(folder: &Path, image: &Path, root: &Path) -> Vec<PathBuf> {
    sr_core::io::per_image_files(folder, image, root, &["png", "csv", "txt"])
}

/// An image's fixations as read from its file.
#[derive(Debug, Clone)]
pub struct Fixations {
    pub file: PathBuf,
    pub sha256: String,
    /// `(x, y)` in the photo's pixels.
    pub points: Vec<(usize, usize)>,
    /// The size of the photo the points belong to, `(width, height)`.
    pub size: (usize, usize),
}

/// The fixation file of `image`, or an error listing where it was looked for.
pub fn find(folder: &Path, image: &Path, root: &Path) -> Result<PathBuf> {
    let tried = candidates(folder, image, root);
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::input(format!(
            "run.fixations: no fixations for {}: looked for {}",
            image.display(),
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_help("a fixation map (.png, the photo's size) or a point list (.csv/.txt, `x,y` per line) per image")
    })
}

/// The SHA-256 of a fixation file's bytes, as hex (recorded, and compared on a rerun).
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read the fixations of a photo of `size` (`(width, height)`) from `file`.
pub fn load(
    file: &Path,
    size: (usize, usize),
    limits: &sr_core::preprocess::PhotoLimits,
) -> Result<Fixations> {
    let bytes = sr_core::io::read_bounded(file, MAX_FIXATION_BYTES, "a fixation file")?;
    let sha256 = sha256(&bytes);
    let png = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let points = if png {
        map_points(&bytes, file, size, limits)?
    } else {
        list_points(&bytes, file, size)?
    };
    Ok(Fixations {
        file: file.to_path_buf(),
        sha256,
        points,
        size,
    })
}

fn map_points(
    bytes: &[u8],
    file: &Path,
    size: (usize, usize),
    limits: &sr_core::preprocess::PhotoLimits,
) -> Result<Vec<(usize, usize)>> {
    let what = format!("{} (a fixation map)", file.display());
    let map = sr_core::preprocess::decode_photo(bytes, limits, &what)?;
    if (map.width, map.height) != size {
        return Err(Error::input(format!(
            "{}: a fixation map of {}x{} pixels for a {}x{} photo: expected the photo's size",
            file.display(),
            map.width,
            map.height,
            size.0,
            size.1
        )));
    }
    let mut out = vec![];
    for (i, px) in map.data.chunks_exact(3).enumerate() {
        if px.iter().any(|&v| v > 0) {
            out.push((i % map.width, i / map.width));
        }
    }
    Ok(out)
}

fn list_points(bytes: &[u8], file: &Path, size: (usize, usize)) -> Result<Vec<(usize, usize)>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::input(format!(
            "{}: a fixation list must be UTF-8 text: {e}",
            file.display()
        ))
    })?;
    let mut out = vec![];
    let mut numbers_seen = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line
            .split([',', ' ', '\t', ';'])
            .filter(|f| !f.is_empty())
            .collect();
        let parsed: Vec<Option<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        let bad = |why: String| {
            Error::input(format!(
                "{} line {}: `{line}`: {why}",
                file.display(),
                n + 1
            ))
            .with_help(
                "one fixation per line: `x,y` in the photo's pixels, 0-based from the top left",
            )
        };
        if parsed.iter().any(|v| v.is_none()) {
            if !numbers_seen && out.is_empty() {
                numbers_seen = true; // a header
                continue;
            }
            return Err(bad("expected two numbers, x and y".into()));
        }
        numbers_seen = true;
        if fields.len() != 2 {
            return Err(bad(format!(
                "expected two numbers, x and y; got {}",
                fields.len()
            )));
        }
        let (x, y) = (parsed[0].unwrap_or(-1.0), parsed[1].unwrap_or(-1.0));
        if !(x >= 0.0 && y >= 0.0 && x < size.0 as f64 && y < size.1 as f64) {
            return Err(bad(format!(
                "outside the {}x{} photo (x from 0 to {}, y from 0 to {})",
                size.0,
                size.1,
                size.0 - 1,
                size.1 - 1
            )));
        }
        if out.len() == MAX_FIXATIONS {
            return Err(bad(format!("more than {MAX_FIXATIONS} fixations")));
        }
        out.push((x as usize, y as usize));
    }
    Ok(out)
}

/// The points of a `size` photo at the model's input: `(x, y)` mapped by `crop` (the resize
/// and the crop's offset), those cropped away dropped.
pub fn to_input(
    points: &[(usize, usize)],
    size: (usize, usize),
    crop: &sr_core::preprocess::Crop,
) -> Vec<(usize, usize)> {
    points
        .iter()
        .filter_map(|&(x, y)| {
            let sx = ((x as f64 + 0.5) * crop.resized.0 as f64 / size.0 as f64).floor() as usize;
            let sy = ((y as f64 + 0.5) * crop.resized.1 as f64 / size.1 as f64).floor() as usize;
            let (cx, cy) = (sx.checked_sub(crop.left)?, sy.checked_sub(crop.top)?);
            (cx < crop.size.0 && cy < crop.size.1).then_some((cx, cy))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_lists_parse_with_headers_comments_and_separators() {
        let f = Path::new("f.csv");
        let pts = list_points(b"x,y\n1,2 # first\n\n3.9 4\n0\t0\n", f, (10, 10)).unwrap();
        assert_eq!(pts, vec![(1, 2), (3, 4), (0, 0)]);
        for (text, says) in [
            ("1,2\nx,y\n", "line 2"),
            ("1,2,3\n", "got 3"),
            ("10,0\n", "outside the 10x10 photo"),
            ("-1,0\n", "outside"),
            ("nan,1\n", "outside"),
        ] {
            let e = list_points(text.as_bytes(), f, (10, 10))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says) && e.contains("f.csv"), "{text}: {e}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_give_points_inside_the_photo() {
        // 20,000 seeded byte strings, half of them built from the list's own characters.
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let alphabet = b"0123456789.,;# \t\n-+eExy";
        let (mut ok, mut refused) = (0, 0);
        for case in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if case % 2 == 0 {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    } else {
                        r as u8
                    }
                })
                .collect();
            match list_points(&bytes, Path::new("r.txt"), (7, 5)) {
                Ok(pts) => {
                    assert!(
                        pts.iter().all(|&(x, y)| x < 7 && y < 5),
                        "{bytes:?}: {pts:?}"
                    );
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("r.txt"), "{e}");
                    refused += 1;
                }
            }
        }
        assert!(
            ok > 1000 && refused > 1000,
            "{ok} parsed, {refused} refused"
        );
    }

    #[test]
    fn points_follow_the_resize_and_the_crop() {
        // A 200 x 100 photo resized to 64 x 32 (shorter side 32), a 32 x 32 crop from x = 16.
        let crop = sr_core::preprocess::Crop {
            resized: (64, 32),
            left: 16,
            top: 0,
            size: (32, 32),
        };
        // x = 100 -> (100.5 * 64 / 200) = 32.16 -> 32 - 16 = 16; y = 50 -> 16.16 -> 16.
        // x = 10 -> 3.36 -> cropped away; x = 199 -> 63.84 -> 63 - 16 = 47 -> cropped away.
        let got = to_input(
            &[(100, 50), (10, 50), (199, 0), (50, 99)],
            (200, 100),
            &crop,
        );
        assert_eq!(got, vec![(16, 16), (0, 31)]);
    }
}
