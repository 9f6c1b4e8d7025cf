//! NumPy `.npy` files (format 1.0, little-endian f32/f64, C order): what srhost writes for
//! maps, and what reference fixtures are read from.

use crate::error::{Error, Result};

/// Encode an f32 array as `.npy` bytes.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Magic (6) + version (2) + header length (2) + header, padded to a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A decoded array: its shape and its values widened to f64.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Decode `.npy` bytes holding `<f4` or `<f8` in C order. `what` names the file in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<NpyArray> {
    let bad = |m: &str| Error::input(format!("{what}: not a supported .npy file: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("format version {v}"))),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    let field = |name: &str| -> Option<&str> {
        let i = header.find(&format!("'{name}'"))? + name.len() + 2;
        Some(
            header[i..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start(),
        )
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad(&format!(
            "dtype {} (expected '<f4' or '<f8')",
            &descr[..descr.find(',').unwrap_or(descr.len())]
        )));
    };
    let fortran = field("fortran_order").is_some_and(|f| f.starts_with("True"));
    let shape_txt = field("shape").ok_or_else(|| bad("no shape"))?;
    let close = shape_txt.find(')').ok_or_else(|| bad("bad shape"))?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|t| t.get(..close.checked_sub(1)?))
        .ok_or_else(|| bad("bad shape"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    // The header's shape, checked against the bytes present before anything is allocated.
    let body = &bytes[start + hlen..];
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(width) == Some(body.len()))
        .ok_or_else(|| {
            bad(&format!(
                "{} data bytes for shape {shape:?} of {width}-byte values",
                body.len()
            ))
        })?;
    let raw: Vec<f64> = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let data = if fortran && shape.len() > 1 {
        // Column-major on disk (Matlab/Octave): reorder to row-major.
        let mut out = vec![0f64; n];
        let mut idx = vec![0usize; shape.len()];
        for v in out.iter_mut() {
            let mut off = 0;
            let mut stride = 1;
            for (d, &i) in idx.iter().enumerate() {
                off += i * stride;
                stride *= shape[d];
            }
            *v = raw[off];
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    } else {
        raw
    };
    Ok(NpyArray { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_shape_headers_are_errors_not_panics() {
        // `)` first, and a multi-byte character cut by the old slice `[1..close]`: both panicked.
        for shape in [")", "\u{e9})", "3,)", "(3,", ""] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(header.len() as u16).to_le_bytes());
            b.extend_from_slice(header.as_bytes());
            let e = decode(&b, "m.npy").unwrap_err();
            assert!(
                e.message.starts_with("m.npy: not a supported .npy file"),
                "{shape}: {e}"
            );
        }
    }

    #[test]
    fn header_is_what_numpy_writes() {
        // numpy 1.26: np.save(f, np.array([[1, 2, 3], [4, 5, 6]], dtype='<f4')) writes this
        // header (128-byte aligned in numpy >= 2 is also legal; 64 is the format's minimum).
        let b = encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + header_len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(b.len(), 10 + header_len + 24);
        let back = decode(&b, "t").unwrap();
        assert_eq!(back.shape, vec![2, 3]);
        assert_eq!(back.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn reads_fortran_order() {
        // np.save of np.asfortranarray([[1, 2, 3], [4, 5, 6]], dtype='<f8'): the body holds
        // 1, 4, 2, 5, 3, 6.
        let mut b = encode_f32(&[2, 3], &[0.0; 6]);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        let header = String::from_utf8(b[10..10 + hl].to_vec()).unwrap().replace(
            "'<f4', 'fortran_order': False",
            "'<f8', 'fortran_order': True ",
        );
        b.truncate(10);
        b.extend_from_slice(header.as_bytes());
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = decode(&b, "f.npy").unwrap();
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn rejects_other_dtypes() {
        let mut b = encode_f32(&[1], &[1.0]);
        b[10 + 11..10 + 14].copy_from_slice(b"i4'");
        assert!(decode(&b, "x.npy").unwrap_err().message.contains("x.npy"));
    }
}
