//! `model.onnx`: any ONNX CNN. ONNX Runtime (through `ort`, loaded at run time from
//! `libonnxruntime`) does the inference; the same file is parsed into sr-core's graph IR so
//! that every relevance method walks it (see [`import`] for what is folded at load time).
//!
//! ONNX Runtime is found, in order, from `ORT_DYLIB_PATH`, from an installed `onnxruntime`
//! Python package (looked up in isolated mode in the interpreter's site directories only, never
//! the working directory), else loading the model fails with how to install it. Its version is checked
//! when the model loads, not at the first inference.

pub mod import;
pub mod proto;

use serde::{Deserialize, Serialize};
use sr_core::{Error, Graph, Model, ModelInfo, ModelStage, Params, Result, StageDef, Tensor};
use sr_nn::Executor;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The ImageNet class names in torchvision's order.
pub const IMAGENET_LABELS: &str = include_str!("../../../assets/labels/imagenet.txt");

/// The oldest ONNX Runtime this build accepts (ort's C API level 17 = onnxruntime 1.17).
pub const MIN_ORT_MINOR: u32 = ort::MINOR_VERSION;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxParams {
    /// The `.onnx` file.
    pub path: String,
    /// Which graph output holds the class scores (default: the first). A Softmax at the end is
    /// looked through: srhost explains the logits that feed it.
    pub output: Option<String>,
    /// `[height, width]` for files whose input size is symbolic.
    pub input_size: Option<[usize; 2]>,
    /// `"imagenet"`, `"none"` (class numbers) or a text file with one class name per line.
    /// Default: imagenet for 1000 classes, else none.
    pub labels: Option<String>,
    /// Shorter side after resizing, before the centre crop (0: resize straight to the input
    /// size). Default: 256/224 of the input height, as torchvision.
    pub resize: Option<usize>,
    /// Per-channel mean on [0, 1]. Default: ImageNet's (torchvision).
    pub mean: Option<Vec<f32>>,
    /// Per-channel std on [0, 1]. Default: ImageNet's (torchvision).
    pub std: Option<Vec<f32>>,
    /// ONNX Runtime intra-op threads (0: its default, one per core).
    pub threads: usize,
    /// What runs the forward pass: `onnxruntime` (the default) or `srhost` (srhost's own
    /// executor on the imported graph, which relevance methods walk anyway; ONNX Runtime is
    /// then not needed).
    pub runtime: String,
}

impl Default for OnnxParams {
    fn default() -> Self {
        OnnxParams {
            path: String::new(),
            output: None,
            input_size: None,
            labels: None,
            resize: None,
            mean: None,
            std: None,
            threads: 0,
            runtime: "onnxruntime".into(),
        }
    }
}

impl Params for OnnxParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        ("path", "the .onnx file (required)"),
        ("output", "the graph output with the class scores (default: the first); a final Softmax is looked through"),
        ("input_size", "[height, width] when the file's input size is symbolic"),
        ("labels", "\"imagenet\", \"none\", or a file with one class name per line (default: imagenet for 1000 classes, else none)"),
        ("resize", "shorter side before the centre crop; 0 resizes straight to the input (default: 256/224 of the input height)"),
        ("mean", "per-channel mean on [0, 1] (default: ImageNet's 0.485, 0.456, 0.406)"),
        ("std", "per-channel std on [0, 1] (default: ImageNet's 0.229, 0.224, 0.225)"),
        ("threads", "ONNX Runtime intra-op threads; 0 = one per core (default 0)"),
        ("runtime", "what runs the forward pass: onnxruntime (default) or srhost (srhost's executor on the imported graph; no ONNX Runtime needed)"),
    ];
}

use sr_core::resolve_path as resolve;

const INSTALL_HELP: &str = "install ONNX Runtime with `python3 -m pip install onnxruntime` (1.17 or newer), or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so, or run the model on srhost's own executor with runtime = \"srhost\" in [model]";

/// Where `libonnxruntime` is: `ORT_DYLIB_PATH`, else the `onnxruntime` Python package's
/// `capi/` folder in the interpreter's site directories (found without importing the package,
/// never in the working directory).
pub fn find_runtime() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::params(format!(
                "ORT_DYLIB_PATH is {}, which is not a file",
                p.display()
            ))
            .with_help(INSTALL_HELP));
        }
        return Ok(p);
    }
    // Isolated mode (-I: no current directory, no PYTHON* variables on sys.path), and only the
    // interpreter's site directories are searched: a folder named `onnxruntime` in the working
    // directory is never taken for the package (its library would run on load).
    let probe = r#"import os, site
for d in list(site.getsitepackages()) + [site.getusersitepackages()]:
    c = os.path.join(d, "onnxruntime", "capi")
    if os.path.isabs(c) and os.path.isdir(c):
        print(c)
        break
"#;
    for py in ["python3", "python"] {
        let Ok(out) = std::process::Command::new(py)
            .args(["-I", "-c", probe])
            .current_dir(std::env::temp_dir())
            .output()
        else {
            continue;
        };
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if dir.is_empty() {
            continue;
        }
        let capi = PathBuf::from(&dir);
        let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("libonnxruntime.so")
                        || n == "libonnxruntime.dylib"
                        || n == "onnxruntime.dll"
                })
            })
            .collect();
        libs.sort();
        if let Some(lib) = libs.into_iter().next() {
            return Ok(lib);
        }
    }
    Err(Error::unsupported("ONNX Runtime was not found (ORT_DYLIB_PATH is not set and no `onnxruntime` Python package is installed)")
        .with_help(INSTALL_HELP))
}

struct Runtime {
    env: ort::environment::Environment,
    version: String,
    path: PathBuf,
}

static RUNTIME: OnceLock<std::result::Result<Runtime, Error>> = OnceLock::new();

/// Load ONNX Runtime once per process and check that its C API is one `ort` supports.
fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            let path = find_runtime()?;
            sr_core::error::catch_panic("loading ONNX Runtime", || {
                let builder = ort::init_from(&path).map_err(|e| {
                    Error::unsupported(format!("ONNX Runtime at {}: {e}", path.display()))
                        .with_help(INSTALL_HELP)
                })?;
                let env = builder.with_name("srhost").build().map_err(|e| {
                    Error::unsupported(format!("ONNX Runtime at {}: {e}", path.display()))
                })?;
                let info = ort::info();
                let version = info
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .find_map(|t| t.strip_prefix("git-branch=rel-"))
                    .unwrap_or("unknown")
                    .to_string();
                Ok(Runtime { env, version, path })
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The ONNX Runtime this process uses: `(version, library path)`.
pub fn runtime_info() -> Result<(String, PathBuf)> {
    runtime().map(|r| (r.version.clone(), r.path.clone()))
}

/// Save ONNX Runtime's basic-level optimisation of `src` to `dst` (constant folding, and
/// BatchNorm and Pad merged into Conv): a smaller file that imports to fewer IR nodes.
pub fn optimise(src: &Path, dst: &Path) -> Result<()> {
    let rt = runtime()?;
    let fail = |e: String| Error::unsupported(format!("optimising {}: {e}", src.display()));
    let _session = ort::session::Session::builder(&rt.env)
        .map_err(|e| fail(e.to_string()))?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level1)
        .map_err(|e| fail(e.to_string()))?
        .with_optimized_model_path(dst)
        .map_err(|e| fail(e.to_string()))?
        .commit_from_file(src)
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// A loaded ONNX model.
pub struct OnnxModel {
    info: ModelInfo,
    exec: Executor,
    /// `None` with `runtime = "srhost"`: the executor runs the forward pass.
    session: Option<Mutex<ort::session::Session>>,
    input_name: String,
    logits_name: String,
    /// The file fixes the batch size at 1: larger batches run one sample at a time.
    batch_one: bool,
}

impl OnnxModel {
    /// Build from the bytes of an `.onnx` file; `source` names it in errors.
    pub fn from_bytes(p: &OnnxParams, bytes: &[u8], source: &str) -> Result<Self> {
        let ctx = |e: Error| e.context(source);
        let m = proto::parse(bytes).map_err(ctx)?;
        let imp = import::import(&m, p.output.as_deref(), p.input_size).map_err(ctx)?;
        // Checked before the executor holds the weights: what a small file makes its folds
        // create is held once more by the executor, and once more again by ONNX Runtime.
        let (limit, holder, help) = if p.runtime == "onnxruntime" {
            (
                import::MAX_GENERATED_FOR_ORT,
                "ONNX Runtime would hold another copy of them",
                format!(
                    "set runtime = \"srhost\" in the [model] table: srhost's executor runs up to {} such values",
                    import::MAX_GENERATED
                ),
            )
        } else {
            (
                import::MAX_GENERATED,
                "srhost holds them twice (the graph and its executor)",
                "store the weights in the file (a weight-stripped test model is for import checks only)".into(),
            )
        };
        let made = imp.generated_values;
        if made > limit {
            return Err(Error::params(format!(
                "{source}: its constant folds make {made} values the file does not store (ConstantOfShape fills, ranges, broadcasts); {holder}, so it runs at most {limit}"
            ))
            .with_help(help));
        }
        let shapes = imp.graph.infer_shapes().map_err(ctx)?;
        let classes: usize = shapes[imp.graph.output][1..].iter().product();
        let input_shape = match &imp.graph.nodes[0].op {
            sr_core::graph::Op::Input { shape } => shape.clone(),
            _ => unreachable!("node 0 is the input"),
        };
        let labels = match p.labels.as_deref() {
            Some("imagenet") | None if classes == 1000 => {
                IMAGENET_LABELS.lines().map(str::to_string).collect()
            }
            Some("none") | None => (0..classes).map(|i| format!("class {i}")).collect(),
            Some("imagenet") => {
                return Err(Error::params(format!(
                "`labels`: the ImageNet labels have 1000 names but {source} has {classes} classes"
            )))
            }
            Some(path) => {
                let (names, f) = sr_core::read_label_file(path)?;
                if names.len() != classes {
                    return Err(Error::params(format!(
                        "`labels`: {} has {} names but {source} has {classes} classes",
                        f.display(),
                        names.len()
                    )));
                }
                names
            }
        };
        let mean = p.mean.clone().unwrap_or(vec![0.485, 0.456, 0.406]);
        let std = p.std.clone().unwrap_or(vec![0.229, 0.224, 0.225]);
        let c = input_shape[0];
        if mean.len() != c || std.len() != c || std.iter().any(|s| *s <= 0.0) {
            return Err(Error::params(format!(
                "`mean` and `std` need {c} values each (the input's channels), std > 0"
            )));
        }
        let info = ModelInfo {
            name: Path::new(source)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "onnx".into()),
            resize: p.resize.unwrap_or((input_shape[1] * 256).div_ceil(224)),
            input_shape,
            mean,
            std,
            labels,
        };
        sr_core::preprocess::check_resize(info.resize, &info.input_shape)?;
        let exec = Executor::new(imp.graph)?;
        match p.runtime.as_str() {
            "onnxruntime" => {}
            "srhost" => {
                return Ok(OnnxModel {
                    info,
                    exec,
                    session: None,
                    input_name: imp.input_name,
                    logits_name: imp.logits_name,
                    batch_one: false,
                })
            }
            other => {
                return Err(Error::params(format!(
                    "`runtime` must be onnxruntime or srhost, got `{other}`"
                )))
            }
        }

        let rt = runtime()?;
        let model_bytes = if imp.logits_is_output {
            bytes.to_vec()
        } else {
            proto::with_extra_output(bytes, &imp.logits_name)?
        };
        let ort_err = |e: ort::Error| {
            Error::unsupported(format!(
                "ONNX Runtime {} could not load {source}: {e}",
                rt.version
            ))
        };
        let ort_err_b = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            Error::unsupported(format!(
                "ONNX Runtime {} could not load {source}: {e}",
                rt.version
            ))
        };
        let mut builder = ort::session::Session::builder(&rt.env).map_err(ort_err)?;
        if p.threads > 0 {
            builder = builder.with_intra_threads(p.threads).map_err(ort_err_b)?;
        }
        let session = builder.commit_from_memory(&model_bytes).map_err(ort_err)?;
        let batch_one = matches!(imp.input_dims[0], proto::Dim::Fixed(1));
        Ok(OnnxModel {
            info,
            exec,
            session: Some(Mutex::new(session)),
            input_name: imp.input_name,
            logits_name: imp.logits_name,
            batch_one,
        })
    }

    /// The ONNX Runtime forward of one batch the file accepts.
    fn run(&self, x: &Tensor) -> Result<Tensor> {
        let Some(session) = &self.session else {
            return self.exec.forward(x);
        };
        let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        let value = ort::value::Tensor::from_array((shape, x.data().to_vec()))
            .map_err(|e| Error::internal(format!("ONNX Runtime input: {e}")))?;
        let mut session = session.lock().map_err(|_| {
            Error::internal("the ONNX Runtime session was poisoned by an earlier panic")
        })?;
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => value])
            .map_err(|e| Error::input(format!("ONNX Runtime inference failed: {e}")))?;
        let out = outputs.get(&self.logits_name).ok_or_else(|| {
            Error::internal(format!("ONNX Runtime returned no `{}`", self.logits_name))
        })?;
        let (s, data) = out.try_extract_tensor::<f32>().map_err(|e| {
            Error::unsupported(format!(
                "output `{}`: {e} (srhost reads float32 outputs)",
                self.logits_name
            ))
        })?;
        let n = s.first().copied().unwrap_or(1).max(0) as usize;
        let classes = if n == 0 { 0 } else { data.len() / n };
        Tensor::new(vec![n, classes], data.to_vec())
    }
}

impl ModelStage for OnnxModel {
    type Params = OnnxParams;

    fn load(p: OnnxParams) -> Result<Self> {
        if p.path.is_empty() {
            return Err(Error::params("`path`: the .onnx file is required"));
        }
        let path = resolve(&p.path);
        let bytes =
            sr_core::io::read_bounded(&path, sr_core::io::MAX_MODEL_BYTES, "an ONNX model")?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let bytes = match proto::inline_external(&bytes, dir)
            .map_err(|e| e.context(path.display().to_string()))?
        {
            Some(inlined) => inlined,
            None => bytes,
        };
        Self::from_bytes(&p, &bytes, &path.display().to_string())
    }
}

impl Model for OnnxModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }
    fn graph(&self) -> Result<Graph> {
        Ok(self.exec.graph().clone())
    }
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let s = input.shape();
        if s.len() != 4 || s[1..] != self.info.input_shape[..] {
            return Err(Error::input(format!(
                "expected an input of shape [N, {}], got {s:?}",
                self.info
                    .input_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !self.batch_one || s[0] == 1 {
            return self.run(input);
        }
        let per = input.numel() / s[0];
        let mut data = Vec::new();
        let mut classes = 0;
        for i in 0..s[0] {
            let one = Tensor::new(
                [&[1][..], &s[1..]].concat(),
                input.data()[i * per..(i + 1) * per].to_vec(),
            )?;
            let y = self.run(&one)?;
            classes = y.shape()[1];
            data.extend_from_slice(y.data());
        }
        Tensor::new(vec![s[0], classes], data)
    }
    fn trace(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        self.exec.trace(input)
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::model::<OnnxModel>(
            "onnx",
            env!("CARGO_PKG_VERSION"),
            "any ONNX CNN: ONNX Runtime runs it, its graph is parsed into the IR for relevance methods.",
        ),
    ],
}
