//! Weight files: safetensors, or PyTorch `.pth`/`.pt` (read without executing them).

use crate::pth;
use sr_core::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Named tensors of a checkpoint, as f32.
pub type Weights = BTreeMap<String, Tensor>;

/// Read a weight file: `.safetensors` by its extension or header, else a PyTorch checkpoint.
/// A `module.` prefix on every key (saved from `DataParallel`) is removed.
pub fn load(path: &Path) -> Result<Weights> {
    let bytes = sr_core::io::read_bounded(path, sr_core::io::MAX_MODEL_BYTES, "a weight file")
        .map_err(|e| e.with_help("give `weights` as the path of a .safetensors or .pth file"))?;
    let named = path.extension().is_some_and(|e| e == "safetensors");
    load_bytes(&bytes, &path.display().to_string(), named)
}

/// [`load`] on a file's bytes (`what` names it in errors; `safetensors`: its name says so).
pub fn load_bytes(bytes: &[u8], what: &str, safetensors: bool) -> Result<Weights> {
    let is_safetensors = safetensors || safetensors::SafeTensors::read_metadata(bytes).is_ok();
    let mut w = if is_safetensors {
        read_safetensors(bytes, what)?
    } else {
        pth::read_pth_bytes(bytes, what)?
    };
    if !w.is_empty() && w.keys().all(|k| k.starts_with("module.")) {
        w = w
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    Ok(w)
}

fn read_safetensors(bytes: &[u8], what: &str) -> Result<Weights> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::input(format!("{what}: not a readable safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        use safetensors::Dtype;
        let b = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => continue, // integer buffers (num_batches_tracked) are not weights
        };
        out.insert(name, Tensor::new(view.shape().to_vec(), data)?);
    }
    Ok(out)
}

/// Write f32 tensors as safetensors (keys sorted).
pub fn save_safetensors(weights: &Weights, path: &Path) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = weights
        .iter()
        .map(|(k, t)| {
            let bytes: &[u8] = bytemuck_f32(t.data());
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape().to_vec(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::internal(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::io(path, e))
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // f32 has no padding and any bit pattern is a valid u8; little-endian hosts only.
    #[cfg(target_endian = "little")]
    // SAFETY: the slice covers exactly the memory of `v`, and u8 has alignment 1.
    unsafe {
        std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v))
    }
}
