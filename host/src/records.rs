//! The records a run leaves: each image's `result.json` (its presence marks the image as
//! finished, and its fingerprint says under which configuration), the atomic writes every file
//! goes through, and the claim a process holds on an image folder while it works in it.
//!
//! Several srhost processes may share one output folder (shards of a run, on one machine or
//! many): temporary files carry their writer's host and process id, and only the writer, or
//! a later process on the same host once the writer is gone, removes them; an image folder is
//! claimed (`.srhost.lock`) by one process at a time, for a lease its holder renews
//! ([`LOCK_LEASE`]), so a claim left by a process that died anywhere is taken over.

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
    /// `run.fixations`: the image's fixation file and how well the photo's own saliency
    /// predicts the fixations.
    #[serde(default)]
    pub fixations: Option<FixationRecord>,
    pub branches: Vec<BranchResult>,
    pub outputs: Vec<String>,
    /// Each output's size in bytes, in the order of `outputs` (empty in files of older
    /// versions): an image counts as finished only while every output is there at its size.
    #[serde(default)]
    pub sizes: Vec<u64>,
    pub seconds: std::collections::BTreeMap<String, f64>,
}

impl ImageResult {
    /// The result of the branch named `name`.
    pub fn branch(&self, name: &str) -> Option<&BranchResult> {
        self.branches.iter().find(|r| r.branch == name)
    }
    pub fn branch_mut(&mut self, name: &str) -> Option<&mut BranchResult> {
        self.branches.iter_mut().find(|r| r.branch == name)
    }
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
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
    /// The saliency benchmark's metrics against the photo's saliency (sr_core::metrics::saliency),
    /// `1` for the relevance map (as SSIM1 reads it), `2` for the SR map: Pearson's CC, SIM
    /// (histogram intersection) and the KL divergence of the photo saliency from the map.
    #[serde(default)]
    pub cc1: Option<f64>,
    #[serde(default)]
    pub cc2: Option<f64>,
    #[serde(default)]
    pub sim1: Option<f64>,
    #[serde(default)]
    pub sim2: Option<f64>,
    #[serde(default)]
    pub kl1: Option<f64>,
    #[serde(default)]
    pub kl2: Option<f64>,
    /// The earth mover's distance to the photo saliency (`[metrics] emd`).
    #[serde(default)]
    pub emd1: Option<f64>,
    #[serde(default)]
    pub emd2: Option<f64>,
    /// Against the image's fixations (`run.fixations`), for the |R| image (1) and the SR map
    /// (2): NSS, AUC-Judd, AUC-Borji and the shuffled AUC.
    #[serde(default)]
    pub nss1: Option<f64>,
    #[serde(default)]
    pub nss2: Option<f64>,
    #[serde(default)]
    pub auc_judd1: Option<f64>,
    #[serde(default)]
    pub auc_judd2: Option<f64>,
    #[serde(default)]
    pub auc_borji1: Option<f64>,
    #[serde(default)]
    pub auc_borji2: Option<f64>,
    #[serde(default)]
    pub sauc1: Option<f64>,
    #[serde(default)]
    pub sauc2: Option<f64>,
    /// Region perturbation, most relevant first: AOPC and its curve.
    #[serde(default)]
    pub aopc: Option<f64>,
    #[serde(default)]
    pub aopc_curve: Vec<f64>,
    /// Insertion and deletion (Petsiuk et al. 2018): the areas under the target's softmax
    /// probability over the share of pixels inserted / deleted, most relevant first (insertion:
    /// higher is better, deletion: lower), and the curves.
    #[serde(default)]
    pub insertion: Option<f64>,
    #[serde(default)]
    pub deletion: Option<f64>,
    #[serde(default)]
    pub insertion_curve: Vec<f64>,
    #[serde(default)]
    pub deletion_curve: Vec<f64>,
    /// Model-parameter randomization (`[metrics] randomization`).
    #[serde(default)]
    pub randomization: Option<RandomizationResult>,
    #[serde(default)]
    pub seconds_relevance: f64,
    #[serde(default)]
    pub seconds_sr: Option<f64>,
}

/// An image's fixations (`run.fixations`) and the photo saliency's scores against them.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct FixationRecord {
    /// The file read, and its SHA-256 (a rerun redoes the image when it changes).
    pub file: String,
    pub sha256: String,
    /// Fixations at the model's input, and those the centre crop cut away.
    pub points: usize,
    pub cropped: usize,
    /// Other images' fixations used as the shuffled AUC's negatives.
    pub shuffled_negatives: usize,
    /// The photo's saliency against the fixations.
    pub nss: Option<f64>,
    pub auc_judd: Option<f64>,
    pub auc_borji: Option<f64>,
    pub sauc: Option<f64>,
}

/// One branch under model-parameter randomization (Adebayo et al. 2018): per step, how like the
/// trained model's map the randomized model's map is.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct RandomizationResult {
    /// `cascading` or `independent`.
    pub order: String,
    pub seed: u64,
    /// The smooth MPRT's samples per relevance map (1: the plain MPRT) and its noise.
    #[serde(default = "one")]
    pub samples: usize,
    #[serde(default)]
    pub noise: f64,
    /// The layers each step randomizes (its own group; a cascading step keeps the earlier ones
    /// randomized too), top first.
    pub steps: Vec<Vec<String>>,
    /// SSIM of the relevance images (|R| summed over channels, min-maxed), trained vs
    /// randomized.
    pub ssim_relevance: Vec<f64>,
    /// Spearman's rank correlation of |R| summed over channels.
    pub spearman: Vec<f64>,
    /// SSIM of the SR maps (with a saliency stage).
    #[serde(default)]
    pub ssim_sr: Vec<f64>,
    /// The Table-1 figures under the fully randomized model (the last cascading step).
    #[serde(default)]
    pub ssim1: Option<f64>,
    #[serde(default)]
    pub ssim2: Option<f64>,
    #[serde(default)]
    pub ssim_ratio: Option<f64>,
    /// The efficient MPRT (Hedström et al. 2023) after the last cascading step: the relative
    /// rise of the discrete entropy (100 bins) of the relevance image, `(H_random - H_trained)
    /// / H_trained` (higher: the explanation lost more of its structure), and of the SR map.
    #[serde(default)]
    pub emprt: Option<f64>,
    #[serde(default)]
    pub emprt_sr: Option<f64>,
}

fn one() -> usize {
    1
}

pub const RESULT_FILE: &str = "result.json";

/// This machine's name, for the temporary files and claims of shared output folders:
/// `SRHOST_HOST` when set (for nodes that share a host name, and for the tests' requeue on
/// "another host"), else the kernel's.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        if let Some(h) = std::env::var("SRHOST_HOST")
            .ok()
            .map(|h| clean_host(h.trim()))
        {
            if !h.is_empty() {
                return h;
            }
        }
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
/// host, process and write (`.<name>.tmp-<host>-<pid>-<n>`, created new: an existing file or
/// link of that name is an error, never followed), then a rename. The folder must exist: a
/// folder removed while srhost writes into it fails the write instead of being made again
/// half-empty.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}-{n}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        host_name(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The folder of image `name` (`/`-separated) under `output`, made if missing, one component
/// at a time. A component that is a symbolic link (or not a folder) is an error: srhost never
/// follows a link inside `run.output`, so it cannot write or delete outside it.
pub fn image_dir(output: &Path, name: &str) -> Result<PathBuf> {
    let mut dir = output.to_path_buf();
    for part in name.split('/') {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::input(format!(
                    "{}: a symbolic link inside the output folder; srhost does not follow links there (it would write outside {})",
                    dir.display(),
                    output.display()
                ))
                .with_help("remove the link, or choose another run.output"))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::input(format!(
                    "{}: expected the image's output folder, found a file",
                    dir.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // Made by another process meanwhile: checked again below.
                        if std::fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                            return Err(Error::input(format!(
                                "{}: not a folder",
                                dir.display()
                            )));
                        }
                    }
                    Err(e) => return Err(Error::io(&dir, e)),
                }
            }
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Ok(dir)
}

/// The outputs an image's `result.json` lists that are not in `dir` as written: missing, not
/// a regular file, or of another size than recorded. Empty: the image is finished.
pub fn missing_outputs(dir: &Path, r: &ImageResult) -> Vec<String> {
    r.outputs
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            let meta = std::fs::symlink_metadata(dir.join(o));
            !meta.is_ok_and(|m| m.is_file() && r.sizes.get(*i).is_none_or(|&s| s == m.len()))
        })
        .map(|(_, o)| o.clone())
        .collect()
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

/// How long a claim lasts without its holder renewing it: a claim older than this is taken
/// over, whoever left it (a process killed on another host, a requeued array task, a container
/// restarted with the same PID). A live holder renews its claims every quarter of it.
/// `SRHOST_LOCK_LEASE_S` sets it (seconds; the tests shorten it).
pub const LOCK_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// The claim file of an image folder.
pub const LOCK_FILE: &str = ".srhost.lock";

/// The lease in force: [`LOCK_LEASE`], or `SRHOST_LOCK_LEASE_S`.
pub fn lease() -> std::time::Duration {
    std::env::var("SRHOST_LOCK_LEASE_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(LOCK_LEASE)
}

/// A token that tells this process apart from an earlier one with the same host name and PID
/// (PID 1 of a restarted container).
fn token() -> u64 {
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

/// The claims this process holds, renewed by one heartbeat thread.
fn held() -> &'static std::sync::Mutex<std::collections::HashSet<PathBuf>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(|| {
        let every = lease() / 4;
        std::thread::Builder::new()
            .name("srhost-lock-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let locks: Vec<PathBuf> = held()
                    .lock()
                    .map(|h| h.iter().cloned().collect())
                    .unwrap_or_default();
                for l in locks {
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&l) {
                        let _ = f.set_modified(std::time::SystemTime::now());
                    }
                }
            })
            .ok();
        std::sync::Mutex::new(std::collections::HashSet::new())
    })
}

/// An image folder claimed by this process; the claim goes when this is dropped.
pub struct Claim(PathBuf);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut h) = held().lock() {
            h.remove(&self.0);
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether the claim in `lock` (its text `held`) may be taken over: its holder is gone (a
/// process of this host that no longer runs, or an earlier process with this one's PID), or it
/// has not been renewed for a lease.
fn stale(lock: &Path, held: &str) -> bool {
    let age = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age > lease() {
        return true;
    }
    let mut f = held.split_whitespace();
    let (Some(host), Some(pid)) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok())) else {
        // Empty or unreadable: its writer died between creating and writing it (a few seconds
        // of grace for a writer still at it).
        return age > std::time::Duration::from_secs(5);
    };
    if host != host_name() {
        return false;
    }
    if pid == std::process::id() {
        // This PID, another process: a restarted container's earlier self.
        return f.next().is_some_and(|t| t != token().to_string());
    }
    !alive(pid)
}

/// Claim image folder `dir` (`dir/.srhost.lock`, created exclusively, holding the host, process
/// id and a token of this process, and renewed while held). `Ok(None)`: another process holds
/// it and has renewed it within the lease ([`LOCK_LEASE`]). A claim whose holder is gone, or
/// that has not been renewed for a lease, is taken over.
pub fn claim(dir: &Path) -> Result<Option<Claim>> {
    let lock = dir.join(LOCK_FILE);
    let me = format!("{} {} {}", host_name(), std::process::id(), token());
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
                if let Ok(mut h) = held().lock() {
                    h.insert(lock.clone());
                }
                return Ok(Some(Claim(lock)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&lock).unwrap_or_default();
                if !stale(&lock, &text) {
                    return Ok(None);
                }
                // Taken over only if it is still the claim judged stale.
                if std::fs::read_to_string(&lock).unwrap_or_default() == text {
                    let _ = std::fs::remove_file(&lock);
                }
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
        if sr_core::contract::artifact_name("", o).is_ok() && no_link_on_the_way(dir, o) {
            let _ = std::fs::remove_file(dir.join(o));
        }
    }
    let _ = std::fs::remove_file(dir.join(RESULT_FILE));
}

/// Whether the folders between `dir` and its file `rel` (`a/b/file`) are real folders, no link
/// among them: removing `dir/rel` then cannot reach outside `dir`. (The file itself may be a
/// link: removing it removes the link.)
fn no_link_on_the_way(dir: &Path, rel: &str) -> bool {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    parts[..parts.len() - 1].iter().all(|c| {
        p.push(c);
        std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_with(name: &str, text: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("srhost-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let l = d.join(LOCK_FILE);
        std::fs::write(&l, text).unwrap();
        l
    }

    #[test]
    fn a_claim_of_an_earlier_process_with_this_pid_is_stale() {
        // PID 1 of a restarted container: same host, same PID, another process.
        let me = std::process::id();
        let other = lock_with("pid-reuse", &format!("{} {me} 12345", host_name()));
        assert!(stale(&other, &std::fs::read_to_string(&other).unwrap()));
        let mine = lock_with("mine", &format!("{} {me} {}", host_name(), token()));
        assert!(!stale(&mine, &std::fs::read_to_string(&mine).unwrap()));
        // Another host's fresh claim is not stale; a dead local process's is.
        let remote = lock_with("remote", "node17 4242 77");
        assert!(!stale(&remote, "node17 4242 77"));
        let dead = lock_with("dead", &format!("{} 4194303 1", host_name()));
        assert!(stale(&dead, &std::fs::read_to_string(&dead).unwrap()));
    }

    #[cfg(unix)]
    #[test]
    fn clearing_a_planted_result_never_deletes_through_a_link() {
        let base = std::env::temp_dir().join(format!("srhost-clear-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dir, elsewhere) = (base.join("out/img"), base.join("elsewhere"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("precious.txt"), "keep").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/mine.png"), "x").unwrap();
        let planted: ImageResult = serde_json::from_str(
            r#"{"image": "x", "label": null, "class_index": null, "branches": [],
                "outputs": ["sub/precious.txt", "real/mine.png"], "seconds": {}}"#,
        )
        .unwrap();
        clear_outputs(&dir, &planted);
        assert!(
            elsewhere.join("precious.txt").is_file(),
            "deleted through the link"
        );
        assert!(!dir.join("real/mine.png").exists());
    }

    #[test]
    fn image_dir_refuses_links_and_files_on_the_way() {
        let out = std::env::temp_dir().join(format!("srhost-imgdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(image_dir(&out, "a/b").unwrap(), out.join("a/b"));
        std::fs::write(out.join("f"), "").unwrap();
        assert!(image_dir(&out, "f/x")
            .unwrap_err()
            .message
            .contains("expected the image's output folder, found a file"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(std::env::temp_dir(), out.join("l")).unwrap();
            assert!(image_dir(&out, "l/x")
                .unwrap_err()
                .message
                .contains("a symbolic link inside the output folder"));
        }
    }
}
