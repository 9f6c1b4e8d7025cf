//! Helpers for the end-to-end tests: find or build the `srhost` binary and plugin libraries,
//! run the CLI, make scratch folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A sample photo shipped in `assets/images/`.
pub fn photo(name: &str) -> PathBuf {
    repo().join("assets/images").join(name)
}

static BUILD: Mutex<()> = Mutex::new(());

/// Build the whole workspace with cargo (the same profile and package selection as the test
/// command, so nothing recompiles) and return every artifact path. Cargo says where it put
/// them (`--message-format=json`), so a custom `CARGO_TARGET_DIR` works. Built once per test
/// binary.
fn artifacts() -> &'static [PathBuf] {
    static ALL: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "--workspace",
                "--message-format=json-render-diagnostics",
            ])
            .output()
            .expect("cannot run cargo");
        assert!(
            out.status.success(),
            "cargo build --workspace failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found = vec![];
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str() {
                    found.push(PathBuf::from(f));
                }
            }
        }
        found
    })
}

fn artifact(suffix: &str) -> PathBuf {
    artifacts()
        .iter()
        .find(|p| p.display().to_string().ends_with(suffix))
        .unwrap_or_else(|| panic!("cargo built no artifact ending in {suffix}"))
        .clone()
}

/// The `srhost` binary.
pub fn srhost_bin() -> PathBuf {
    artifact("/srhost")
}

/// The cdylib of workspace package `package`: its `.so` path.
pub fn plugin_so(package: &str) -> PathBuf {
    artifact(&format!(
        "/lib{}.{}",
        package.replace('-', "_"),
        std::env::consts::DLL_EXTENSION
    ))
}

/// What a CLI run returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The process's peak resident memory in MiB (`ru_maxrss` from `wait4`).
    pub peak_mib: f64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} (peak {:.0} MiB)\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.peak_mib, self.stdout, self.stderr
        )
    }
}

/// Run `srhost args...` in `cwd`, and measure its peak memory.
pub fn srhost(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(srhost_bin());
    cmd.current_dir(cwd).args(args).env_remove("RUST_BACKTRACE");
    run_measured(cmd)
}

/// Python run as the measured command's parent: it runs the command (argv[2:]) as its child,
/// writes that child's peak resident memory (`RUSAGE_CHILDREN`: its reaped children only, not
/// itself) to the file argv[1] in KiB, and exits with the child's code (128 + the signal for a
/// signal).
const MEASURE: &str = "import resource, subprocess, sys\n\
r = subprocess.run(sys.argv[2:]).returncode\n\
open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n\
sys.exit(r if r >= 0 else 128 - r)\n";

/// Run `cmd` to its end with its output captured, with its exit code and peak resident memory.
///
/// The peak is the command's own, measured by a small parent process (`python3`, [`MEASURE`])
/// that starts it: `wait4`'s `ru_maxrss` of a child of the test process also carries the
/// test process's own high-water mark, folded in when the child execs after a `CLONE_VM`
/// spawn (a test that allocated 1.1 GB in-process made every later srhost "take" 1.1 GB, for
/// an srhost that takes 8 MB); a grandchild forked by a fresh process starts clean. A command
/// killed by a signal gets code 128 + the signal.
pub fn run_measured(cmd: Command) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let report = std::env::temp_dir().join(format!(
        "srhost-tests-peak-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut wrapped = Command::new("python3");
    wrapped
        .args(["-c", MEASURE])
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let mut child = wrapped
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the command");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let mut stderr = Vec::new();
    let _ = err.read_to_end(&mut stderr);
    let stdout = reader.join().unwrap();
    let status = child.wait().expect("wait for the command");
    let code = status.code().unwrap_or(-1);
    let peak_kb: f64 = std::fs::read_to_string(&report)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the measuring parent wrote no peak (exit {code}): {}",
                String::from_utf8_lossy(&stderr)
            )
        });
    let _ = std::fs::remove_file(&report);
    Run {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        peak_mib: peak_kb / 1024.0,
    }
}

/// A fresh scratch folder under the target directory, removed first if it exists.
pub fn scratch(name: &str) -> PathBuf {
    // Numbered per call: tests in one binary run in parallel, and two that ask for the same
    // name (two DenseNet tests loading one architecture's labels) must not clear each other's.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir()
        .join(format!("srhost-tests-{}", std::process::id()))
        .join(format!("{name}-{n}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `text` to `dir/name` and return the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Read a `.npy` written by srhost.
pub fn read_npy(path: &Path) -> sr_core::npy::NpyArray {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sr_core::npy::decode(&bytes, &path.display().to_string()).unwrap()
}

/// A PNG as the context-aware search's input image: RGB in [0, 1].
pub fn ca_png(path: &Path) -> sr_saliency_context_aware::imresize::Img {
    let p = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = p.dimensions();
    sr_saliency_context_aware::imresize::Img {
        h: h as usize,
        w: w as usize,
        c: 3,
        data: p.into_raw().iter().map(|&v| v as f64 / 255.0).collect(),
    }
}

/// A `.npy` of `H x W` or `H x W x C` values as the context-aware search's input image.
pub fn ca_npy(path: &Path) -> sr_saliency_context_aware::imresize::Img {
    let a = read_npy(path);
    sr_saliency_context_aware::imresize::Img {
        h: a.shape[0],
        w: a.shape[1],
        c: a.shape.get(2).copied().unwrap_or(1),
        data: a.data,
    }
}

/// TOML string literal of a path.
pub fn lit(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A golden fixture file under `tests/fixtures/golden/`.
pub fn golden(rel: &str) -> PathBuf {
    repo().join("tests/fixtures/golden").join(rel)
}

/// A `.npy` fixture as an sr-core tensor (f32).
pub fn npy_tensor(path: &Path) -> sr_core::Tensor {
    let a = read_npy(path);
    sr_core::Tensor::new(a.shape, a.data.iter().map(|&v| v as f32).collect()).unwrap()
}

/// The golden set's ImageNet-normalised input of photo `img` (`coffee`, `chelsea`, ...), `1 x 3 x
/// 224 x 224`.
pub fn golden_input(img: &str) -> sr_core::Tensor {
    npy_tensor(&golden(&format!("inputs/{img}/input_imagenet.npy")))
}

/// The index of the largest value (the top class of a logits row; the first of equal maxima).
pub fn top_class(logits: &sr_core::Tensor) -> usize {
    (0..logits.numel())
        .max_by(|&a, &b| logits.data()[a].total_cmp(&logits.data()[b]))
        .unwrap()
}

/// `max |a - b| / max |b|`: the relative error used by the parity tests. Infinite when either
/// side holds a value that is not finite (a NaN must fail a bound, never vanish in a `max`).
pub fn rel_max_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (a, b) = (wide(a), wide(b));
    let err = max_abs_diff(&a, &b);
    if err.is_infinite() {
        return err;
    }
    err / max_abs(&b)
}

/// `max |v|`, infinite when a value is not finite.
pub fn max_abs(v: &[f64]) -> f64 {
    if v.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    v.iter().fold(0f64, |m, x| m.max(x.abs()))
}

/// `max |a - b|`, infinite when either side holds a value that is not finite: the one
/// comparison every test's bounds go through.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// The mean of `|a - b|`, infinite when either side holds a value that is not finite.
pub fn mean_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

/// Pearson correlation of two maps, in f64: NaN when either holds a value that is not finite
/// (or is constant), so a bound written `!(p >= MIN)` fails on it.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return f64::NAN;
    }
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (*x as f64 - ma, *y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt())
}

/// A model made directly from a graph (for hand-built networks): input shape from the graph's
/// input node, mean 0 and std 1, no labels.
pub struct GraphModel(pub sr_nn::Executor);

impl sr_core::Model for GraphModel {
    fn info(&self) -> sr_core::ModelInfo {
        let shape = match &self.0.graph().nodes[0].op {
            sr_core::Op::Input { shape } => shape.clone(),
            _ => unreachable!("node 0 is the input"),
        };
        sr_core::ModelInfo {
            name: "hand".into(),
            input_shape: shape,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            resize: 0,
            labels: vec![],
        }
    }
    fn graph(&self) -> sr_core::Result<sr_core::Graph> {
        Ok(self.0.graph().clone())
    }
    fn forward(&self, x: &sr_core::Tensor) -> sr_core::Result<sr_core::Tensor> {
        self.0.forward(x)
    }
    fn trace(&self, x: &sr_core::Tensor) -> sr_core::Result<Vec<sr_core::Tensor>> {
        self.0.trace(x)
    }
}

/// A graph node for hand-built networks: `params` as `(name, tensor)` pairs.
pub fn node(
    name: &str,
    op: sr_core::Op,
    inputs: Vec<usize>,
    params: Vec<(&str, sr_core::Tensor)>,
) -> sr_core::Node {
    sr_core::Node {
        name: name.into(),
        op,
        inputs,
        params: params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// Headless Chromium as the machine's `chromium` package installs it, run with `args`, a fresh
/// profile in `profile`, and the flags that keep it off the network.
pub fn headless(profile: &Path, args: &[&str]) -> Output {
    let bin = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("Chromium is not installed: `bash scripts/test.sh` installs Debian's chromium package");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .output()
        .expect("cannot start chromium")
}

/// A page as headless Chromium leaves it after its scripts ran (up to 10 s of virtual time):
/// the DOM in stdout, and the console messages in stderr ([`console_messages`]).
pub fn load_page(profile: &Path, page: &Path) -> Output {
    let url = format!("file://{}", page.display());
    headless(
        profile,
        &[
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url,
        ],
    )
}

/// The numbers of a JSON array.
pub fn json_floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

/// The page's console messages (`console.log`/`error`, uncaught exceptions) in the stderr of
/// a [`headless`] run given `--enable-logging=stderr --v=0`: Chromium logs each as a line
/// with `:CONSOLE`.
pub fn console_messages(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// A narrow torchvision checkpoint fixture under `arch`, with 10 numbered labels (`class 0`,
/// ...): the ResNet and DenseNet fixtures have 10 classes.
pub fn ten_class_checkpoint(
    arch: &str,
    weights: &Path,
) -> sr_core::Result<sr_backend_torchvision::TorchvisionModel> {
    use sr_core::ModelStage;
    let dir = scratch(&format!("labels-{arch}"));
    let labels = write(
        &dir,
        "labels.txt",
        &(0..10).map(|i| format!("class {i}\n")).collect::<String>(),
    );
    sr_backend_torchvision::TorchvisionModel::load(sr_backend_torchvision::TorchvisionParams {
        arch: arch.into(),
        weights: weights.display().to_string(),
        labels: Some(labels),
        ..Default::default()
    })
}

/// Bind a relevance method to a model and explain one batch, as the host does for its first
/// image (tests call methods directly; the host binds once per run).
pub trait BindExplain {
    fn explain(
        &self,
        model: &std::sync::Arc<dyn sr_core::Model>,
        input: &sr_core::Tensor,
        targets: &[usize],
    ) -> sr_core::Result<sr_core::Explanation>;
}

impl<R: sr_core::Relevance + ?Sized> BindExplain for R {
    fn explain(
        &self,
        model: &std::sync::Arc<dyn sr_core::Model>,
        input: &sr_core::Tensor,
        targets: &[usize],
    ) -> sr_core::Result<sr_core::Explanation> {
        let e = self
            .bind(model.clone())?
            .explain(&sr_core::Request::new(input, targets))?;
        // The contract the host enforces (shape, finite values, one row per target), so a
        // method called directly in a test cannot hand back NaN unnoticed.
        sr_core::contract::explanation(&e, input.shape(), targets, "the method")?;
        Ok(e)
    }
}

/// A model shared as the host shares it with the relevance methods that bind to it.
pub fn shared(model: impl sr_core::Model + 'static) -> std::sync::Arc<dyn sr_core::Model> {
    std::sync::Arc::new(model)
}

/// Every file under `dir` (relative paths), hidden ones too, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut v = vec![];
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Two runs' outputs are the same: metrics.csv's rows without the timing columns, the image
/// folders' files, and every `.npy` byte for byte.
pub fn assert_same_run(a: &Path, b: &Path) {
    fn comparable(out: &Path) -> (Vec<String>, Vec<String>) {
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let keep: Vec<usize> = (0..head.len())
            .filter(|&i| !head[i].starts_with("seconds"))
            .collect();
        let rows = csv
            .lines()
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                keep.iter().map(|&i| c[i]).collect::<Vec<_>>().join(",")
            })
            .collect();
        let listing = files_in(out)
            .into_iter()
            .filter(|f| f.contains('/') && !f.starts_with(".runs/") && !f.starts_with('.'))
            .collect();
        (rows, listing)
    }
    let (x, y) = (comparable(a), comparable(b));
    assert_eq!(x.0, y.0, "metrics rows differ");
    assert_eq!(x.1, y.1, "files differ");
    let npys = x.1.iter().filter(|f| f.ends_with(".npy")).count();
    assert!(npys > 0, "no maps compared");
    for f in x.1.iter().filter(|f| f.ends_with(".npy")) {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

/// A torchvision-style checkpoint shared as the host shares models (`labels`: a label file, or
/// the arch's own).
pub fn torchvision(
    arch: &str,
    weights: &str,
    labels: Option<String>,
) -> std::sync::Arc<dyn sr_core::Model> {
    use sr_core::ModelStage;
    shared(
        sr_backend_torchvision::TorchvisionModel::load(sr_backend_torchvision::TorchvisionParams {
            arch: arch.into(),
            weights: weights.into(),
            labels,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// A label file of ten classes, for the narrow 10-class golden models.
pub fn labels10() -> String {
    write(&scratch("labels10"), "l.txt", &"c\n".repeat(10))
}
