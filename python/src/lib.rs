//! `import srhost`: srhost's stages from Python, on numpy arrays (docs/python.md).
//!
//! Every function takes its stage parameters as keywords, checked as `srhost check` checks a
//! pipeline's TOML (unknown keys with a "did you mean", wrong types), and raises `ValueError`
//! (bad values, shapes, NaN), `TypeError` (wrong Python types), `OSError` (files) or
//! `RuntimeError` with the CLI's messages. The GIL is released while srhost computes, so
//! several Python threads may call at once.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use sr_core::preprocess::{self, Rgb8};
use sr_core::sr::{
    channel_sum, perturb, relevance_to_image, resolve_targets, RelevanceInput, Target,
};
use sr_core::stage::check_params;
use sr_core::ErrorCode;
use sr_core::{contract, Explainer, Image, ImageId, Model, Registry, Request, StageKind, Tensor};
use srhost::spec::MetricsSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

/// The stages: every built-in, and those of the plugins `load_plugin` loaded.
static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| RwLock::new(srhost::registry()));

fn registry() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

/// An srhost error as the Python exception of its kind, with the CLI's message.
fn py_err(e: sr_core::Error) -> PyErr {
    let msg = e.to_string();
    match e.code {
        ErrorCode::InvalidParams | ErrorCode::InvalidInput | ErrorCode::Unsupported => {
            PyValueError::new_err(msg)
        }
        ErrorCode::Io => PyOSError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

fn value_err(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A Python keyword value as TOML: bool, int, float, str, and lists or dicts of them.
fn to_toml(key: &str, v: &Bound<'_, PyAny>) -> PyResult<toml::Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v
            .extract::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| value_err(format!("`{key}`: the integer {v} does not fit in 64 bits")));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(v.extract()?));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(v.extract()?));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut out = vec![];
        for (i, x) in v.try_iter()?.enumerate() {
            out.push(to_toml(&format!("{key}[{i}]"), &x?)?);
        }
        return Ok(toml::Value::Array(out));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(toml::Value::Table(to_table(Some(d))?));
    }
    Err(PyTypeError::new_err(format!(
        "`{key}`: expected a bool, int, float, str or a list of them, got {}",
        v.get_type().name()?
    )))
}

fn to_table(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<toml::Table> {
    let mut t = toml::Table::new();
    if let Some(d) = kwargs {
        for (k, v) in d.iter() {
            let k: String = k.extract()?;
            let v = to_toml(&k, &v)?;
            t.insert(k, v);
        }
    }
    Ok(t)
}

/// Check `params` against stage `kind.name` as `srhost check` does, and give its TOML text.
fn stage_params(kind: StageKind, name: &str, params: &toml::Table) -> PyResult<String> {
    let reg = registry();
    let entry = reg.lookup(kind, name).map_err(py_err)?;
    check_params(&entry.info, params).map_err(|e| {
        let mut m = format!("`{}`: {}", e.key, e.message);
        if !e.help.is_empty() {
            m.push_str(&format!("\n  help: {}", e.help));
        }
        value_err(m)
    })?;
    toml::to_string(params).map_err(|e| value_err(e.to_string()))
}

/// A path argument (`str` or `os.PathLike`), if `obj` is one.
fn as_path(obj: &Bound<'_, PyAny>) -> Option<PathBuf> {
    if obj.is_instance_of::<PyString>() {
        return obj.extract::<String>().ok().map(PathBuf::from);
    }
    if obj.hasattr("__fspath__").unwrap_or(false) {
        return obj.extract::<PathBuf>().ok();
    }
    None
}

/// A numpy array's shape and values as f32, with whether it was `uint8`.
struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
    u8: bool,
}

/// The most values an array handed to srhost may hold (1 GiB as float32): its element count
/// is checked before it is copied, so a zero-stride view of a huge shape (`np.broadcast_to`)
/// is an error, not gigabytes.
const MAX_ARRAY_VALUES: usize = 1 << 28;

/// `obj` as an array of `T`, converted to f32 by `to`; `None` if it is not one, an error if it
/// holds more than [`MAX_ARRAY_VALUES`].
fn array_of<T: numpy::Element + Copy>(
    obj: &Bound<'_, PyAny>,
    to: fn(T) -> f32,
    u8: bool,
    what: &str,
) -> Option<PyResult<Array>> {
    let a = obj.extract::<PyReadonlyArrayDyn<'_, T>>().ok()?;
    let v = a.as_array();
    let n = v
        .shape()
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if n.is_none_or(|n| n > MAX_ARRAY_VALUES) {
        return Some(Err(value_err(format!(
            "{what}: an array of shape {:?} holds more than {MAX_ARRAY_VALUES} values",
            v.shape()
        ))));
    }
    Some(Ok(Array {
        shape: v.shape().to_vec(),
        data: v.iter().map(|&x| to(x)).collect(),
        u8,
    }))
}

fn array(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Array> {
    if let Some(a) = array_of::<u8>(obj, |x| x as f32, true, what)
        .or_else(|| array_of::<f32>(obj, |x| x, false, what))
        .or_else(|| array_of::<f64>(obj, |x| x as f32, false, what))
    {
        return a;
    }
    if let Ok(a) = obj.cast::<numpy::PyUntypedArray>() {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a uint8, float32 or float64 array, got dtype {}",
            a.dtype()
        )));
    }
    Err(PyTypeError::new_err(format!(
        "{what}: expected a numpy array, got {}",
        obj.get_type().name()?
    )))
}

fn check_finite(a: &Array, what: &str) -> PyResult<()> {
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        return Err(value_err(format!(
            "{what}: value {} at flat index {i} is not finite",
            a.data[i]
        )));
    }
    Ok(())
}

/// A photo: a path (decoded as srhost decodes photos), or an `H x W x 3` (or `H x W`, grey)
/// array, `uint8` or float in [0, 1].
fn photo(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Rgb8> {
    if let Some(p) = as_path(obj) {
        return obj
            .py()
            .detach(|| preprocess::load_photo(&p))
            .map_err(py_err);
    }
    let a = array(obj, what)?;
    check_finite(&a, what)?;
    let (h, w, c) = match a.shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] if c == 1 || c == 3 => (h, w, c),
        _ => {
            return Err(value_err(format!(
                "{what}: expected an H x W x 3 or H x W array, got shape {:?}",
                a.shape
            )))
        }
    };
    if h == 0 || w == 0 {
        return Err(value_err(format!("{what}: the image is empty")));
    }
    let to_u8 = |v: f32| -> PyResult<u8> {
        if a.u8 {
            return Ok(v as u8);
        }
        if !(0.0..=1.0).contains(&v) {
            return Err(value_err(format!(
                "{what}: float images must be in [0, 1], found {v}"
            )));
        }
        Ok((v * 255.0).round() as u8)
    };
    let mut data = Vec::with_capacity(h * w * 3);
    for i in 0..h * w {
        for ch in 0..3 {
            data.push(to_u8(a.data[i * c + if c == 3 { ch } else { 0 }])?);
        }
    }
    Ok(Rgb8 {
        width: w,
        height: h,
        data,
    })
}

fn image_array<'py>(py: Python<'py>, img: &Image) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let shape = if img.channels == 1 {
        vec![img.height, img.width]
    } else {
        vec![img.height, img.width, img.channels]
    };
    tensor_array(py, shape, img.data().to_vec())
}

fn tensor_array(
    py: Python<'_>,
    shape: Vec<usize>,
    data: Vec<f32>,
) -> PyResult<Bound<'_, PyArrayDyn<f32>>> {
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Saliency stage `method` (parameters `toml`) on `img`, its output held to the stage contract.
fn saliency_of(method: &str, toml: &str, img: &Image, what: &str) -> sr_core::Result<Image> {
    let stage = registry().create_saliency(method, toml)?;
    let s = stage.saliency(img)?;
    contract::saliency_of(&s, img, what)?;
    Ok(s)
}

/// The saliency of a photo: `H x W` float32 in [0, 1].
///
/// `image`: a path, or an `H x W x 3` array (`uint8`, or float in [0, 1]). `method`: any
/// saliency stage (`context-aware`, `itti`, or one a plugin adds); `**params`: its keys, as in a
/// pipeline's `[saliency]` table.
#[pyfunction]
#[pyo3(signature = (image, method = "context-aware", **params))]
fn saliency<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    method: &str,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let toml = stage_params(StageKind::Saliency, method, &to_table(params)?)?;
    let rgb = photo(image, "image")?;
    let img = preprocess::to_image(&rgb).map_err(py_err)?;
    let out = py
        .detach(|| saliency_of(method, &toml, &img, "saliency of the image"))
        .map_err(py_err)?;
    image_array(py, &out)
}

/// A relevance map from any tool as a `1 x C x H x W` tensor: `C x H x W` or `H x W`, finite.
fn relevance_tensor(obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let a = array(obj, "relevance")?;
    check_finite(&a, "relevance")?;
    let shape = match a.shape[..] {
        [h, w] => vec![1, 1, h, w],
        [c, h, w] => vec![1, c, h, w],
        [1, c, h, w] => vec![1, c, h, w],
        _ => {
            return Err(value_err(format!(
                "relevance: expected a C x H x W or H x W array, got shape {:?}",
                a.shape
            )))
        }
    };
    if shape.iter().any(|&d| d == 0) {
        return Err(value_err(format!(
            "relevance: the map is empty (shape {:?})",
            a.shape
        )));
    }
    Tensor::new(shape, a.data).map_err(py_err)
}

/// The SR map of a relevance map: the saliency (by default context-aware) of the map, as the
/// pipeline computes it. `relevance`: `C x H x W` or `H x W` float, from srhost, Zennit, Captum
/// or anything else. `relevance_input`: how the map becomes the saliency stage's image
/// (`abs-rgb`, the paper's, `abs-sum` or `positive`).
#[pyfunction]
#[pyo3(signature = (relevance, method = "context-aware", relevance_input = "abs-rgb", **params))]
fn sr_map<'py>(
    py: Python<'py>,
    relevance: &Bound<'py, PyAny>,
    method: &str,
    relevance_input: &str,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let how: RelevanceInput = relevance_input
        .parse()
        .map_err(|m| value_err(format!("`relevance_input`: {m}")))?;
    let toml = stage_params(StageKind::Saliency, method, &to_table(params)?)?;
    let r = relevance_tensor(relevance)?;
    let out = py
        .detach(|| saliency_of(method, &toml, &relevance_to_image(&r, how)?, "SR map"))
        .map_err(py_err)?;
    image_array(py, &out)
}

/// Wang et al.'s SSIM of two `H x W` maps with values in [0, 1] (Gaussian window, sigma 1.5,
/// as the pipeline's SSIM1/SSIM2 and scikit-image's `gaussian_weights=True`).
#[pyfunction]
fn ssim(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (a, b) = (array(a, "a")?, array(b, "b")?);
    check_finite(&a, "a")?;
    check_finite(&b, "b")?;
    if a.shape.len() != 2 || a.shape != b.shape {
        return Err(value_err(format!(
            "ssim: expected two H x W arrays of one shape, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let (h, w) = (a.shape[0], a.shape[1]);
    let f = |x: &Array| -> Vec<f64> { x.data.iter().map(|&v| v as f64).collect() };
    let (fa, fb) = (f(&a), f(&b));
    Ok(py.detach(|| sr_core::metrics::ssim(&fa, &fb, h, w)))
}

/// Two `H x W` maps of one shape as float64 (from float32 values), with H and W.
fn two_maps(
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(Vec<f64>, Vec<f64>, usize, usize)> {
    let (a, b) = (array(a, "a")?, array(b, "b")?);
    check_finite(&a, "a")?;
    check_finite(&b, "b")?;
    if a.shape.len() != 2 || a.shape != b.shape || a.data.is_empty() {
        return Err(value_err(format!(
            "{what}: expected two non-empty H x W arrays of one shape, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let f = |x: &Array| -> Vec<f64> { x.data.iter().map(|&v| v as f64).collect() };
    Ok((f(&a), f(&b), a.shape[0], a.shape[1]))
}

/// An `H x W` map and fixations `(x, y)` inside it, as float64 and pixel positions.
fn map_and_fixations(
    map: &Bound<'_, PyAny>,
    fixations: Vec<(usize, usize)>,
    what: &str,
) -> PyResult<(Vec<f64>, usize, Vec<(usize, usize)>)> {
    let m = array(map, "map")?;
    check_finite(&m, "map")?;
    if m.shape.len() != 2 || m.data.is_empty() {
        return Err(value_err(format!(
            "{what}: expected a non-empty H x W map, got shape {:?}",
            m.shape
        )));
    }
    let (h, w) = (m.shape[0], m.shape[1]);
    if fixations.is_empty() {
        return Err(value_err(format!("{what}: no fixations")));
    }
    if let Some((x, y)) = fixations.iter().find(|(x, y)| *x >= w || *y >= h) {
        return Err(value_err(format!(
            "{what}: fixation (x {x}, y {y}) outside the {h} x {w} map"
        )));
    }
    Ok((m.data.iter().map(|&v| v as f64).collect(), w, fixations))
}

/// Pearson's linear correlation of two `H x W` maps (the saliency benchmark's CC; 0 when one
/// is constant).
#[pyfunction]
fn cc(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (a, b, _, _) = two_maps(a, b, "cc")?;
    Ok(sr_core::metrics::saliency::cc(&a, &b))
}

/// SIM: the sum of the pixelwise minimum of two `H x W` maps, each as a density.
#[pyfunction]
fn sim(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (a, b, _, _) = two_maps(a, b, "sim")?;
    Ok(sr_core::metrics::saliency::sim(&a, &b))
}

/// The MIT benchmark's KL divergence of `truth` from `pred` (two `H x W` maps as densities).
#[pyfunction]
fn kl(pred: &Bound<'_, PyAny>, truth: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (p, t, _, _) = two_maps(pred, truth, "kl")?;
    Ok(sr_core::metrics::saliency::kl(&p, &t))
}

/// Spearman's rank correlation of two `H x W` maps (ties: mean ranks).
#[pyfunction]
fn spearman(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<f64> {
    let (a, b, _, _) = two_maps(a, b, "spearman")?;
    Ok(sr_core::metrics::saliency::spearman(&a, &b))
}

/// The discrete entropy of an array's values in `bins` equal bins (Quantus's
/// `discrete_entropy`, the efficient MPRT's complexity): `numpy.histogram` then
/// `scipy.stats.entropy`.
#[pyfunction]
#[pyo3(signature = (a, bins = 100))]
fn discrete_entropy(a: &Bound<'_, PyAny>, bins: usize) -> PyResult<f64> {
    let a = array(a, "a")?;
    check_finite(&a, "a")?;
    if a.data.is_empty() || !(1..=1_000_000).contains(&bins) {
        return Err(value_err(format!(
            "discrete_entropy: expected a non-empty array and 1 to 1000000 bins, got {} values and {bins} bins",
            a.data.len()
        )));
    }
    let v: Vec<f64> = a.data.iter().map(|&x| x as f64).collect();
    Ok(sr_core::metrics::saliency::discrete_entropy(&v, bins))
}

/// The earth mover's distance of two `H x W` maps, averaged to at most `cells` cells on the
/// longer side (1 to 32), exact.
#[pyfunction]
#[pyo3(signature = (a, b, cells = 16))]
fn emd(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>, cells: usize) -> PyResult<f64> {
    if !(1..=32).contains(&cells) {
        return Err(value_err(format!(
            "emd: `cells` must be 1 to 32, got {cells}"
        )));
    }
    let (a, b, h, w) = two_maps(a, b, "emd")?;
    Ok(py.detach(|| sr_core::metrics::saliency::emd(&a, &b, h, w, cells)))
}

/// Normalised scanpath saliency of an `H x W` map at fixations, a list of `(x, y)` pixels.
#[pyfunction]
fn nss(map: &Bound<'_, PyAny>, fixations: Vec<(usize, usize)>) -> PyResult<f64> {
    let (m, w, f) = map_and_fixations(map, fixations, "nss")?;
    Ok(sr_core::metrics::saliency::nss(&m, w, &f))
}

/// AUC-Judd of an `H x W` map at fixations (`(x, y)` pixels) against every pixel.
#[pyfunction]
fn auc_judd(map: &Bound<'_, PyAny>, fixations: Vec<(usize, usize)>) -> PyResult<f64> {
    let (m, w, f) = map_and_fixations(map, fixations, "auc_judd")?;
    Ok(sr_core::metrics::saliency::auc_judd(&m, w, &f))
}

/// AUC-Borji (exact: every pixel as a negative) of an `H x W` map at fixations.
#[pyfunction]
fn auc_borji(map: &Bound<'_, PyAny>, fixations: Vec<(usize, usize)>) -> PyResult<f64> {
    let (m, w, f) = map_and_fixations(map, fixations, "auc_borji")?;
    Ok(sr_core::metrics::saliency::auc_borji(&m, w, &f))
}

/// Shuffled AUC: the map at `fixations` against the map at `other` (other images' fixations).
#[pyfunction]
fn auc_shuffled(
    map: &Bound<'_, PyAny>,
    fixations: Vec<(usize, usize)>,
    other: Vec<(usize, usize)>,
) -> PyResult<f64> {
    let (m, w, f) = map_and_fixations(map, fixations, "auc_shuffled")?;
    let (_, _, o) = map_and_fixations(map, other, "auc_shuffled (other)")?;
    Ok(sr_core::metrics::saliency::auc_shuffled(&m, w, &f, &o))
}

/// A classifier: ONNX (`Model.onnx`) or a torchvision checkpoint (`Model.torchvision`).
#[pyclass(frozen, name = "Model", module = "srhost")]
struct PyModel {
    inner: Arc<dyn Model>,
    /// The relevance methods bound to this model, by method and parameters (TOML): the first
    /// `explain` of a method binds it (LRP canonizes the graph and plans its backward pass), the
    /// later ones reuse it.
    explainers: Mutex<HashMap<(String, String), Arc<dyn Explainer>>>,
}

fn load_model(py: Python<'_>, backend: &str, params: toml::Table) -> PyResult<PyModel> {
    let toml = stage_params(StageKind::Model, backend, &params)?;
    let m = py
        .detach(|| registry().create_model(backend, &toml))
        .map_err(py_err)?;
    Ok(PyModel {
        inner: Arc::from(m),
        explainers: Mutex::new(HashMap::new()),
    })
}

impl PyModel {
    /// `method` with parameters `toml`, bound to this model (once).
    fn explainer(&self, method: &str, toml: &str) -> sr_core::Result<Arc<dyn Explainer>> {
        let key = (method.to_string(), toml.to_string());
        if let Some(e) = self.lock().get(&key) {
            return Ok(e.clone());
        }
        let e: Arc<dyn Explainer> = Arc::from(
            registry()
                .create_relevance(method, toml)?
                .bind(self.inner.clone())?,
        );
        Ok(self.lock().entry(key).or_insert(e).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<dyn Explainer>>> {
        self.explainers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Images as the model's `N x C x H x W` input: a path, an `H x W x 3` photo, a list of
    /// those, or an already normalised `N x C x H x W` float array.
    fn batch(&self, images: &Bound<'_, PyAny>) -> PyResult<Tensor> {
        let info = self.inner.info();
        let one = |obj: &Bound<'_, PyAny>, what: &str| -> PyResult<Tensor> {
            let rgb = photo(obj, what)?;
            let (x, _) = obj
                .py()
                .detach(|| preprocess::preprocess(&rgb, &info))
                .map_err(py_err)?;
            Ok(x)
        };
        let parts: Vec<Tensor> = if as_path(images).is_some() {
            vec![one(images, "images")?]
        } else if images.is_instance_of::<PyList>() || images.is_instance_of::<PyTuple>() {
            let mut v = vec![];
            for (i, x) in images.try_iter()?.enumerate() {
                v.push(one(&x?, &format!("images[{i}]"))?);
            }
            v
        } else {
            let a = array(images, "images")?;
            if a.shape.len() == 4 && !a.u8 {
                check_finite(&a, "images")?;
                if a.shape[1..] != info.input_shape[..] {
                    return Err(value_err(format!(
                        "images: a normalised batch must be N x {:?} for this model, got {:?}",
                        info.input_shape, a.shape
                    )));
                }
                return Tensor::new(a.shape, a.data).map_err(py_err);
            }
            if a.shape.len() == 4 {
                let mut v = vec![];
                for i in 0..a.shape[0] {
                    let item = images.get_item(i)?;
                    v.push(one(&item, &format!("images[{i}]"))?);
                }
                v
            } else {
                vec![one(images, "images")?]
            }
        };
        if parts.is_empty() {
            return Err(value_err("images: the list is empty"));
        }
        let n = parts.len();
        let mut shape = parts[0].shape().to_vec();
        shape[0] = n;
        let data: Vec<f32> = parts
            .iter()
            .flat_map(|t| t.data().iter().copied())
            .collect();
        Tensor::new(shape, data).map_err(py_err)
    }
}

#[pymethods]
impl PyModel {
    /// An ONNX classifier (`path`), with the `[model]` keys of the `onnx` backend
    /// (`mean`, `std`, `resize`, `labels`, ...).
    #[staticmethod]
    #[pyo3(signature = (path, **params))]
    fn onnx(py: Python<'_>, path: PathBuf, params: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut t = to_table(params)?;
        t.insert(
            "path".into(),
            toml::Value::String(path.display().to_string()),
        );
        load_model(py, "onnx", t)
    }

    /// A torchvision architecture (`arch`, e.g. "vgg16") with a checkpoint (`weights`: `.pth`
    /// or `.safetensors`); with neither, the shipped EfficientNet-Lite0.
    #[staticmethod]
    #[pyo3(signature = (arch = None, weights = None, **params))]
    fn torchvision(
        py: Python<'_>,
        arch: Option<String>,
        weights: Option<PathBuf>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut t = to_table(params)?;
        if let Some(a) = arch {
            t.insert("arch".into(), toml::Value::String(a));
        }
        if let Some(w) = weights {
            t.insert(
                "weights".into(),
                toml::Value::String(w.display().to_string()),
            );
        }
        load_model(py, "torchvision", t)
    }

    /// Name, input shape `[C, H, W]`, normalisation, resize and class labels.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.inner.info();
        let d = PyDict::new(py);
        d.set_item("name", i.name)?;
        d.set_item("input_shape", i.input_shape)?;
        d.set_item("mean", i.mean)?;
        d.set_item("std", i.std)?;
        d.set_item("resize", i.resize)?;
        d.set_item("labels", i.labels)?;
        Ok(d)
    }

    /// The photo as the model sees it before normalisation (resized and centre-cropped as
    /// torchvision does): `H x W x 3` uint8, what the pipeline writes as `input.png`.
    fn crop<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
        let rgb = photo(image, "image")?;
        let info = self.inner.info();
        let crop = py
            .detach(|| preprocess::resize_and_crop(&rgb, &info))
            .map_err(py_err)?;
        ArrayD::from_shape_vec(IxDyn(&[crop.height, crop.width, 3]), crop.data)
            .map(|a| a.into_pyarray(py))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Logits, `N x classes`.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = self.batch(images)?;
        let m = self.inner.clone();
        let n = x.shape()[0];
        let y = py
            .detach(|| {
                let y = m.forward(&x)?;
                contract::logits(&y, n, "the model")?;
                Ok(y)
            })
            .map_err(py_err)?;
        tensor_array(py, y.shape().to_vec(), y.data().to_vec())
    }

    /// Relevance maps, `N x C x H x W` float32, in model-input space. `method`: any relevance
    /// stage (`lrp`, `gradient`, `gradient-x-input`, `deeplift`); `target`: "top1" (the
    /// default), a class index, a label, or a list with one per image; `**params`: the stage's
    /// keys (`composite = "epsilon-plus-flat"`, ...).
    #[pyo3(signature = (images, method = "lrp", target = None, **params))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        method: &str,
        target: Option<&Bound<'py, PyAny>>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let toml = stage_params(StageKind::Relevance, method, &to_table(params)?)?;
        let x = self.batch(images)?;
        let n = x.shape()[0];
        let targets = targets_of(target, n)?;
        let ids = image_ids(images)?;
        let m = self.inner.clone();
        let e = py
            .detach(|| {
                let info = m.info();
                let logits = m.forward(&x)?;
                contract::logits(&logits, n, "the model")?;
                let classes = logits.numel() / n;
                let mut ts = vec![];
                for (i, t) in targets.iter().enumerate() {
                    let l = &logits.data()[i * classes..(i + 1) * classes];
                    ts.extend(
                        resolve_targets(t, l, &info.labels).map_err(|e| e.context("target"))?,
                    );
                }
                let what = format!("relevance.{method}");
                let e = self
                    .explainer(method, &toml)
                    .and_then(|rel| {
                        rel.explain(&Request {
                            input: &x,
                            targets: &ts,
                            logits: Some(&logits),
                            images: &ids,
                        })
                    })
                    .map_err(|e| e.context(&what))?;
                contract::explanation(&e, x.shape(), &ts, &what)?;
                Ok(e)
            })
            .map_err(py_err)?;
        tensor_array(
            py,
            e.relevance.shape().to_vec(),
            e.relevance.data().to_vec(),
        )
    }
}

/// Model-parameter randomization of one image's relevance (what `[metrics] randomization`
/// does per branch): the learned layers randomized top down in `steps` groups, `cascading` or
/// `independent`, seeded; per step Spearman's rank correlation and the SSIM of the |R| images,
/// trained against randomized (each the mean of `samples` passes for the smooth MPRT, with
/// Gaussian noise of `noise` times the input's range); after a full cascade the efficient
/// MPRT's entropy rise. Returns a dict: `order`, `seed`, `samples`, `noise`, `target`, `steps`
/// (each step's layer names), `spearman`, `ssim`, `emprt` (None unless cascading).
#[pyfunction]
#[pyo3(signature = (model, image, method = "lrp", order = "cascading", steps = 4, seed = 0, samples = 1, noise = 0.1, target = None, **params))]
#[allow(clippy::too_many_arguments)]
fn randomization<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyModel>,
    image: &Bound<'py, PyAny>,
    method: &str,
    order: &str,
    steps: usize,
    seed: u64,
    samples: usize,
    noise: f64,
    target: Option<&Bound<'py, PyAny>>,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    use srhost::randomization::{abs_image, entropy_rise, Params, Passes, Steps};
    use srhost::spec::Randomization;
    let order_ = match order {
        "cascading" => Randomization::Cascading,
        "independent" => Randomization::Independent,
        o => {
            return Err(value_err(format!(
                "order: `{o}`; expected \"cascading\" or \"independent\""
            )))
        }
    };
    let spec = MetricsSpec {
        randomization: order_,
        randomization_steps: steps,
        randomization_samples: samples,
        randomization_noise: noise,
        seed,
        ..MetricsSpec::default()
    };
    srhost::spec::check_metrics(&spec).map_err(|(k, m)| value_err(format!("`{k}`: {m}")))?;
    let toml = stage_params(StageKind::Relevance, method, &to_table(params)?)?;
    let m = model.get();
    let x = m.batch(image)?;
    if x.shape()[0] != 1 {
        return Err(value_err("image: randomization takes one image"));
    }
    let ids = image_ids(image)?;
    let target = targets_of(target, 1)?.remove(0);
    let net = m.inner.clone();
    let p = Params {
        order: order_,
        steps,
        seed,
        samples,
        noise,
    };
    type Curves = (usize, Vec<Vec<String>>, Vec<f64>, Vec<f64>, Option<f64>);
    let (t, names, spearman, ssim, emprt): Curves = py
        .detach(|| -> sr_core::Result<Curves> {
            let info = net.info();
            let logits = net.forward(&x)?;
            let t = resolve_targets(&target, logits.data(), &info.labels)?[0];
            let what = format!("relevance.{method}");
            let passes = Passes::new(&x, &ids, &p);
            let ex = m.explainer(method, &toml).map_err(|e| e.context(&what))?;
            let (r0, s0) = passes.explain(ex.as_ref(), t, &what)?;
            let (a, h, w) = abs_image(&r0)?;
            let trained = s0.map(|s| s.0).unwrap_or_else(|| a.clone());
            let st = Steps::of(net.as_ref(), p)?;
            let rel = registry().create_relevance(method, &toml)?;
            let (mut spearman, mut ssim, mut emprt) = (vec![], vec![], None);
            for k in 0..st.len() {
                let what = format!("{what}, randomization step {} of {}", k + 1, st.len());
                let ex = rel.bind(st.model(k)?).map_err(|e| e.context(&what))?;
                let (r, s) = passes.explain(ex.as_ref(), t, &what)?;
                let (ra, _, _) = abs_image(&r)?;
                let cmp = s.map(|s| s.0).unwrap_or_else(|| ra.clone());
                spearman.push(sr_core::metrics::saliency::spearman(&trained, &cmp));
                ssim.push(sr_core::metrics::ssim(&trained, &cmp, h, w));
                if st.is_full(k) {
                    emprt = entropy_rise(&a, &ra);
                }
            }
            Ok((t, st.names(), spearman, ssim, emprt))
        })
        .map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("order", order)?;
    d.set_item("seed", seed)?;
    d.set_item("samples", samples)?;
    d.set_item("noise", if samples > 1 { noise } else { 0.0 })?;
    d.set_item("target", t)?;
    d.set_item("steps", names)?;
    d.set_item("spearman", spearman)?;
    d.set_item("ssim", ssim)?;
    d.set_item("emprt", emprt)?;
    Ok(d)
}

/// The images of `explain` by their paths, when they are given as paths (a method that reads
/// something per image, such as `relevance.file`, needs them); empty otherwise.
fn image_ids(images: &Bound<'_, PyAny>) -> PyResult<Vec<ImageId>> {
    let id = |p: PathBuf| ImageId {
        root: p
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        path: p.display().to_string(),
    };
    if let Some(p) = as_path(images) {
        return Ok(vec![id(p)]);
    }
    if images.is_instance_of::<PyList>() || images.is_instance_of::<PyTuple>() {
        let paths: Vec<Option<PathBuf>> = images
            .try_iter()?
            .map(|x| Ok(as_path(&x?)))
            .collect::<PyResult<_>>()?;
        if paths.iter().all(Option::is_some) {
            return Ok(paths.into_iter().flatten().map(id).collect());
        }
    }
    Ok(vec![])
}

/// `target` as one [`Target`] per image.
fn targets_of(target: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<Target>> {
    let one = |t: &Bound<'_, PyAny>| -> PyResult<Target> {
        if t.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(
                "target: expected \"top1\", a class index or a label",
            ));
        }
        if let Ok(i) = t.extract::<i64>() {
            return usize::try_from(i)
                .map(Target::Class)
                .map_err(|_| value_err(format!("target: class {i} is negative")));
        }
        let s: String = t.extract().map_err(|_| {
            PyTypeError::new_err("target: expected \"top1\", a class index or a label")
        })?;
        match s.parse::<Target>() {
            Ok(t @ (Target::Top(1) | Target::Label(_))) => Ok(t),
            _ => Err(value_err(format!(
                "target: `{s}`: explain makes one map per image; give \"top1\", a class or a label"
            ))),
        }
    };
    match target {
        None => Ok(vec![Target::default(); n]),
        Some(t) if t.is_instance_of::<PyList>() || t.is_instance_of::<PyTuple>() => {
            let v: Vec<Target> = t.try_iter()?.map(|x| one(&x?)).collect::<PyResult<_>>()?;
            if v.len() != n {
                return Err(value_err(format!(
                    "target: {} targets for {n} images",
                    v.len()
                )));
            }
            Ok(v)
        }
        Some(t) => Ok(vec![one(t)?; n]),
    }
}

/// Region perturbation (Samek et al. 2017) of one image: patches removed most-relevant first
/// by `relevance` (`C x H x W` or `H x W` at the model's input size), scored by the target
/// logit. Returns `{"aopc", "curve", "aopc_random", "curve_random", "target"}`; the keys are
/// those of `[metrics]` (`aopc_steps`, `aopc_patch`, `aopc_fill`, `seed`).
#[pyfunction]
#[pyo3(signature = (model, image, relevance, target = None, **params))]
fn aopc<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyModel>,
    image: &Bound<'py, PyAny>,
    relevance: &Bound<'py, PyAny>,
    target: Option<&Bound<'py, PyAny>>,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut t = to_table(params)?;
    for k in ["ssim", "aopc"] {
        if t.contains_key(k) {
            return Err(value_err(format!(
                "`{k}`: not a key of srhost.aopc (its keys: aopc_steps, aopc_patch, aopc_fill, seed)"
            )));
        }
    }
    t.insert("aopc".into(), toml::Value::Boolean(true));
    let spec: MetricsSpec = toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| value_err(format!("[metrics]: {}", e.message())))?;
    srhost::spec::check_metrics(&spec).map_err(|(k, m)| value_err(format!("`{k}`: {m}")))?;
    let m = model.get();
    let x = m.batch(image)?;
    if x.shape()[0] != 1 {
        return Err(value_err("image: aopc takes one image"));
    }
    let r = relevance_tensor(relevance)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    if r.shape()[2..] != [h, w] {
        return Err(value_err(format!(
            "relevance: {:?} does not match the model's input {h} x {w}",
            &r.shape()[1..]
        )));
    }
    let target = targets_of(target, 1)?.remove(0);
    let net = m.inner.clone();
    let (t, ours, random) = py
        .detach(|| {
            let info = net.info();
            let logits = net.forward(&x)?;
            let t = resolve_targets(&target, logits.data(), &info.labels)?[0];
            let sum = channel_sum(&r)?;
            let order = sr_core::metrics::patches_by_relevance(&sum, h, w, spec.aopc_patch);
            let ours = perturb(net.as_ref(), &x, &order, t, &spec.perturbation())?;
            let order = sr_core::metrics::patches_random(h, w, spec.aopc_patch, spec.seed);
            let random = perturb(net.as_ref(), &x, &order, t, &spec.perturbation())?;
            Ok((t, ours, random))
        })
        .map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("target", t)?;
    d.set_item("aopc", ours.aopc())?;
    d.set_item("curve", ours.curve())?;
    d.set_item("aopc_random", random.aopc())?;
    d.set_item("curve_random", random.curve())?;
    Ok(d)
}

/// Run a pipeline TOML as `srhost run` does (`set`: `{"run.output": "out/x", ...}`, as
/// `--set`), and return `{"done", "skipped", "failed", "output", "summary", "images"}`: the
/// counts, the failed images with their errors, and metrics.json's per-branch summary and
/// per-image rows.
#[pyfunction]
#[pyo3(signature = (pipeline, set = None, jobs = 0, force = false))]
fn run<'py>(
    py: Python<'py>,
    pipeline: PathBuf,
    set: Option<&Bound<'py, PyDict>>,
    jobs: usize,
    force: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut sets = vec![];
    if let Some(d) = set {
        for (k, v) in d.iter() {
            let k: String = k.extract()?;
            let v = to_toml(&k, &v)?;
            sets.push(format!("{k}={v}"));
        }
    }
    let fail = |e: srhost::Fail| -> PyErr {
        if e.0 == 2 {
            value_err(e.1)
        } else {
            PyRuntimeError::new_err(e.1)
        }
    };
    let json = py
        .detach(|| -> Result<String, srhost::Fail> {
            let raw = srhost::spec::RawSpec::read(&pipeline, &sets)
                .map_err(|e| srhost::Fail(srhost::exit::USAGE, e.to_string()))?;
            for p in raw
                .plugin_paths()
                .map_err(|e| srhost::Fail(srhost::exit::USAGE, e.to_string()))?
            {
                let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
                let known = reg.entries().any(|e| {
                    matches!(&e.source, sr_core::StageSource::Plugin { path, .. } if *path == p)
                });
                if !known {
                    reg.load_plugin(&p).map_err(|e| {
                        srhost::Fail(srhost::exit::USAGE, format!("plugin not loaded: {e}"))
                    })?;
                }
            }
            let reg = registry();
            let p = raw
                .validate(&reg)
                .map_err(|e| srhost::Fail(srhost::exit::USAGE, e.to_string()))?;
            let done = srhost::execute(&p, &reg, srhost::runner::RunOptions { jobs, force })?;
            let metrics = srhost::report::read(&p.output)
                .map_err(|e| srhost::Fail(srhost::exit::FAILED, e.to_string()))?;
            let s = &done.summary;
            let v = serde_json::json!({
                "done": s.done,
                "skipped": s.skipped,
                "failed": s.failed.iter().map(|(p, e)| serde_json::json!({
                    "image": p.display().to_string(), "error": e.to_string(),
                })).collect::<Vec<_>>(),
                "output": p.output.display().to_string(),
                "fingerprint": done.fingerprint,
                "summary": metrics.branches,
                "images": metrics.images,
            });
            Ok(v.to_string())
        })
        .map_err(fail)?;
    py.import("json")?.call_method1("loads", (json,))
}

/// Draw maps with a renderer stage (`panel`, `heatmap`, `edge-overlay`, or a plugin's) and
/// write its pictures into `out_dir`; returns their paths. `image`: the photo (a path or an
/// `H x W x 3` array) at the maps' size, e.g. `Model.crop(...)`; `relevance`: `C x H x W`;
/// `sr` and `photo_saliency`: `H x W` maps in [0, 1]; `label`: the title's prediction.
#[pyfunction]
#[pyo3(signature = (image, relevance, sr = None, photo_saliency = None, renderer = "panel", out_dir = ".", name = "image", label = "", branch = "relevance", **params))]
#[allow(clippy::too_many_arguments)]
fn render<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    relevance: &Bound<'py, PyAny>,
    sr: Option<&Bound<'py, PyAny>>,
    photo_saliency: Option<&Bound<'py, PyAny>>,
    renderer: &str,
    out_dir: &str,
    name: &str,
    label: &str,
    branch: &str,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Vec<PathBuf>> {
    let toml = stage_params(StageKind::Renderer, renderer, &to_table(params)?)?;
    let rgb = photo(image, "image")?;
    let photo_img = preprocess::to_image(&rgb).map_err(py_err)?;
    let rel = relevance_tensor(relevance)?;
    let (h, w) = (rel.shape()[2], rel.shape()[3]);
    if (photo_img.height, photo_img.width) != (h, w) {
        return Err(value_err(format!(
            "image: {} x {} does not match the relevance map's {h} x {w}",
            photo_img.height, photo_img.width
        )));
    }
    let map = |obj: Option<&Bound<'py, PyAny>>, what: &str| -> PyResult<Option<Image>> {
        let Some(obj) = obj else { return Ok(None) };
        let a = array(obj, what)?;
        check_finite(&a, what)?;
        if a.shape != [h, w] {
            return Err(value_err(format!(
                "{what}: expected an H x W map of {h} x {w}, got shape {:?}",
                a.shape
            )));
        }
        if a.data.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(value_err(format!("{what}: values must be in [0, 1]")));
        }
        Image::new(w, h, 1, a.data).map(Some).map_err(py_err)
    };
    let input = sr_core::RenderInput {
        image_name: name.to_string(),
        photo: photo_img.clone(),
        model_input: Some(photo_img),
        label: label.to_string(),
        branches: vec![sr_core::BranchMaps {
            branch: branch.to_string(),
            relevance: rel,
            sr: map(sr, "sr")?,
        }],
        photo_saliency: map(photo_saliency, "photo_saliency")?,
        truth: None,
    };
    let artifacts = py
        .detach(|| {
            let r = registry().create_renderer(renderer, &toml)?;
            let out = r.render(&input)?;
            for a in &out {
                contract::artifact_name(renderer, &a.name)?;
            }
            Ok(out)
        })
        .map_err(py_err)?;
    let out_dir = PathBuf::from(out_dir);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", out_dir.display())))?;
    let mut paths = vec![];
    for a in artifacts {
        let p = out_dir.join(&a.name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| PyOSError::new_err(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&p, &a.bytes)
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", p.display())))?;
        paths.push(p);
    }
    Ok(paths)
}

/// Load a plugin library (`.so`): its stages become usable by name in every function here.
/// Returns the stage keys it added (`"saliency.my-saliency"`, ...).
#[pyfunction]
fn load_plugin(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    let loaded = py
        .detach(|| {
            REGISTRY
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .load_plugin(&path)
        })
        .map_err(py_err)?;
    Ok(loaded.stages)
}

/// Every stage: `{"kind.name": {"source", "params": {key: default}}}`.
#[pyfunction]
fn stages<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for e in registry().entries() {
        let p = PyDict::new(py);
        for k in &e.info.params {
            p.set_item(&k.key, k.default_toml.clone())?;
        }
        let s = PyDict::new(py);
        s.set_item("source", e.source.to_string())?;
        s.set_item("params", p)?;
        d.set_item(e.info.key(), s)?;
    }
    Ok(d)
}

#[pymodule]
#[pyo3(name = "srhost")]
fn srhost_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(saliency, m)?)?;
    m.add_function(wrap_pyfunction!(sr_map, m)?)?;
    m.add_function(wrap_pyfunction!(ssim, m)?)?;
    for f in [
        wrap_pyfunction!(cc, m)?,
        wrap_pyfunction!(sim, m)?,
        wrap_pyfunction!(kl, m)?,
        wrap_pyfunction!(spearman, m)?,
        wrap_pyfunction!(emd, m)?,
        wrap_pyfunction!(nss, m)?,
        wrap_pyfunction!(auc_judd, m)?,
        wrap_pyfunction!(auc_borji, m)?,
        wrap_pyfunction!(auc_shuffled, m)?,
        wrap_pyfunction!(discrete_entropy, m)?,
        wrap_pyfunction!(randomization, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add_function(wrap_pyfunction!(aopc, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(render, m)?)?;
    m.add_function(wrap_pyfunction!(load_plugin, m)?)?;
    m.add_function(wrap_pyfunction!(stages, m)?)?;
    m.add_class::<PyModel>()?;
    Ok(())
}
