//! The records a run leaves: each image's `result.json` (its presence marks the image as
//! finished, and its fingerprint says under which configuration), the atomic writes every file
//! goes through, and the claim a process holds on an image folder while it works in it.
//!
//! Several srhost processes may share one output folder (shards of a run, on one machine or
//! many): temporary files carry their writer's host and process id, and only the writer, or
//! a later process on the same host once the writer is gone, removes them; an image folder is
//! claimed (`.srhost.lock`) by one process at a time.

use serde::{Deserialize, Serialize};
use sr_core::{Error, Result};
use std::path::{Path, PathBuf};

/// Per-image record, written last: its presence marks the image as finished.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ImageResult {
    pub image: String,
    /// What decided this image's outputs (stage parameters, model files, srhost version): a
    /// rerun redoes the image when the fingerprint differs. Empty in files of older versions.
    #[serde(default)]
    pub fingerprint: String,
    pub label: Option<String>,
    pub class_index: Option<usize>,
    /// Ground truth from `run.labels` (the class name), and whether the prediction matches it.
    #[serde(default)]
    pub truth: Option<String>,
    /// The ground truth's class index, when the model's labels give one.
    #[serde(default)]
    pub truth_index: Option<usize>,
    #[serde(default)]
    pub correct: Option<bool>,
    /// False when `run.select` left this image out after its prediction (no maps).
    #[serde(default = "yes")]
    pub selected: bool,
    /// AOPC of a random patch order (the baseline every branch's AOPC is compared with).
    #[serde(default)]
    pub aopc_random: Option<f64>,
    #[serde(default)]
    pub aopc_random_curve: Vec<f64>,
    pub branches: Vec<BranchResult>,
    pub outputs: Vec<String>,
    pub seconds: std::collections::BTreeMap<String, f64>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BranchResult {
    pub branch: String,
    pub target: usize,
    pub relevance_sum: f64,
    pub target_score: f64,
    pub ratio: f64,
    /// SSIM(relevance map, photo saliency): the paper's SSIM1.
    #[serde(default)]
    pub ssim1: Option<f64>,
    /// SSIM(SR map, photo saliency): SSIM2.
    #[serde(default)]
    pub ssim2: Option<f64>,
    /// SSIM2 / SSIM1 (Table 1).
    #[serde(default)]
    pub ssim_ratio: Option<f64>,
    /// Region perturbation, most relevant first: AOPC and its curve.
    #[serde(default)]
    pub aopc: Option<f64>,
    #[serde(default)]
    pub aopc_curve: Vec<f64>,
    #[serde(default)]
    pub seconds_relevance: f64,
    #[serde(default)]
    pub seconds_sr: Option<f64>,
}

pub const RESULT_FILE: &str = "result.json";

/// This machine's name, for the temporary files and claims of shared output folders.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| clean_host(h.trim()))
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into())
    })
}

fn clean_host(h: &str) -> String {
    h.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether process `pid` of this host is alive.
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, named after this
/// host, process and write (`.<name>.tmp-<host>-<pid>-<n>`), then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}-{n}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        host_name(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The writer of a temporary file (`.<name>.tmp-<host>-<pid>-<n>`, or `.<name>.tmp-<pid>` of
/// older versions, taken as this host's).
fn temp_owner(name: &str) -> Option<(String, u32)> {
    let (_, tail) = name.rsplit_once(".tmp-")?;
    let parts: Vec<&str> = tail.rsplitn(3, '-').collect();
    match parts[..] {
        [_, pid, host] => Some((host.to_string(), pid.parse().ok()?)),
        [pid] => Some((host_name().to_string(), pid.parse().ok()?)),
        _ => None,
    }
}

/// Remove the temporary files in `dir` whose writer is gone: a process of this host that no
/// longer runs. Another host's are left alone (its process may still be writing).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if !n.starts_with('.') {
            continue;
        }
        if let Some((host, pid)) = temp_owner(&n) {
            if host == host_name() && !alive(pid) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An image folder claimed by this process; the claim goes when this is dropped.
pub struct Claim(PathBuf);

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Claim image folder `dir` (`dir/.srhost.lock`, created exclusively, holding the host and
/// process id). `Ok(None)`: another live process holds it (or a process of another host, whose
/// liveness cannot be checked from here). A claim left by a process of this host that is gone
/// is taken over.
pub fn claim(dir: &Path) -> Result<Option<Claim>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock = dir.join(".srhost.lock");
    let me = format!("{} {}", host_name(), std::process::id());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(me.as_bytes())
                    .map_err(|e| Error::io(&lock, e))?;
                return Ok(Some(Claim(lock)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let held = std::fs::read_to_string(&lock).unwrap_or_default();
                let stale = match held.split_once(' ') {
                    Some((host, pid)) => {
                        host == host_name() && pid.trim().parse().is_ok_and(|p| !alive(p))
                    }
                    // Empty: its writer died between creating and writing it.
                    None => held.is_empty(),
                };
                if !stale {
                    return Ok(None);
                }
                let _ = std::fs::remove_file(&lock);
            }
            Err(e) => return Err(Error::io(&lock, e)),
        }
    }
    Ok(None)
}

/// Every finished image under `out`: `(folder relative to out, its result)`, sorted by folder.
/// Hidden folders are skipped; a `result.json` that does not parse is an error naming it.
pub fn scan_results(out: &Path) -> Result<Vec<(String, ImageResult)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, ImageResult)>) -> Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(r) = read_result(&p)? {
                    let rel = p.strip_prefix(root).unwrap_or(&p);
                    let rel: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push((rel.join("/"), r));
                }
                walk(root, &p, out)?;
            }
        }
        Ok(())
    }
    let mut v = vec![];
    walk(out, out, &mut v)?;
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Remove what an image's earlier `result.json` lists (its outputs, then the record itself)
/// before the image is redone, so a redone folder never mixes two runs' files. Only plain file
/// names inside `dir` are removed.
pub fn clear_outputs(dir: &Path, old: &ImageResult) {
    for o in &old.outputs {
        if sr_core::contract::artifact_name("", o).is_ok() {
            let _ = std::fs::remove_file(dir.join(o));
        }
    }
    let _ = std::fs::remove_file(dir.join(RESULT_FILE));
}

/// An image's `result.json` in `dir`, if it is finished (`None`: not there).
pub fn read_result(dir: &Path) -> Result<Option<ImageResult>> {
    let f = dir.join(RESULT_FILE);
    let Ok(bytes) = std::fs::read(&f) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::io(&f, e))
}

/// Write an image's `result.json` into `dir`, last: it marks the image as finished.
pub fn write_result(dir: &Path, result: &ImageResult) -> Result<()> {
    let json = serde_json::to_vec_pretty(result).map_err(|e| Error::internal(e.to_string()))?;
    write_atomic(&dir.join(RESULT_FILE), &json)
}
