//! The pipeline spec: a TOML file, `--set` overrides, and validation before any heavy work.
//!
//! Every error names the file, the TOML key path and its line, and says what was expected.
//! Paths in the spec (images, output, plugins) are relative to the current directory.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sr_core::stage::{check_params, suggest};
use sr_core::{kind_name, Registry, StageKind};
use std::fmt;
use std::path::{Path, PathBuf};

/// A spec error: where (file, key, line) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: String,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    pub help: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "`{k}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// One stage as the spec configures it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    /// The TOML path of its table, e.g. `relevance.lrp_eps`.
    pub table: String,
    /// The stage name (`use = ...`).
    pub name: String,
    /// Its parameters (every key but `use`), as TOML text.
    pub params_toml: String,
}

/// A validated pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub file: String,
    /// Every image of the run (all shards), sorted by output folder name.
    pub entries: Vec<crate::dataset::Entry>,
    /// The part of `entries` this process takes (`--shard` / `run.shard`), if any.
    pub shard: Option<crate::dataset::Shard>,
    pub output: PathBuf,
    pub plugins: Vec<PathBuf>,
    pub model: Option<StageSpec>,
    /// `(branch, stage)` in file order.
    pub relevance: Vec<(String, StageSpec)>,
    pub saliency: Option<StageSpec>,
    /// How relevance becomes the saliency stage's input for the SR map.
    pub relevance_input: RelevanceInput,
    pub renderers: Vec<StageSpec>,
    pub target: Target,
    /// The spec after `--set`, as TOML, for `run.json`.
    pub resolved_toml: String,
    /// Ground truth (`run.labels`).
    pub labels: crate::dataset::Labels,
    /// What a photo may be (`run.max_pixels`, `run.allow_truncated`).
    pub photo_limits: sr_core::preprocess::PhotoLimits,
    /// `run.labels` as written (for the fingerprint).
    pub labels_spec: Option<String>,
    /// `run.fixations`: the folder of fixation files (see [`crate::fixations`]).
    pub fixations: Option<PathBuf>,
    /// The `[metrics]` table.
    pub metrics: MetricsSpec,
    pub select: Select,
}

/// What the run measures per image and branch (`[metrics]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSpec {
    /// SSIM of the relevance map and of the SR map against the photo's saliency (Table 1),
    /// with CC, SIM and KL.
    pub ssim: bool,
    /// The earth mover's distance too (with `ssim`), on a grid of `emd_cells` cells.
    pub emd: bool,
    pub emd_cells: usize,
    /// Region perturbation (Samek et al. 2017): AOPC of most-relevant-first vs random order.
    pub aopc: bool,
    pub aopc_steps: usize,
    pub aopc_patch: usize,
    pub aopc_fill: sr_core::metrics::Fill,
    /// Insertion and deletion curves (Petsiuk et al. 2018) per branch.
    pub insertion_deletion: bool,
    pub insertion_deletion_steps: usize,
    pub insertion_baseline: sr_core::metrics::Baseline,
    pub deletion_baseline: sr_core::metrics::Baseline,
    pub blur_sigma: f32,
    /// Model-parameter randomization (Adebayo et al. 2018): `"none"`, `"cascading"` or
    /// `"independent"`, in `randomization_steps` groups of layers (0: every layer a step).
    pub randomization: Randomization,
    pub randomization_steps: usize,
    /// The smooth MPRT (Hedström et al. 2023): each compared relevance map is the mean of
    /// `randomization_samples` passes, all but one on the input plus Gaussian noise of
    /// `randomization_noise` times the input's range (1: the plain MPRT).
    pub randomization_samples: usize,
    pub randomization_noise: f64,
    pub seed: u64,
}

/// The order of a model-parameter randomization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Randomization {
    None,
    /// From the output down, each step adding the next group of layers.
    Cascading,
    /// One group at a time, the rest as trained.
    Independent,
}

impl MetricsSpec {
    /// The AOPC keys as region perturbation takes them.
    pub fn perturbation(&self) -> sr_core::sr::Perturb {
        sr_core::sr::Perturb {
            patch: self.aopc_patch,
            steps: self.aopc_steps,
            fill: self.aopc_fill,
            seed: self.seed,
        }
    }

    /// The insertion/deletion keys as sr_core takes them.
    pub fn insertion_deletion(&self) -> sr_core::sr::InsDel {
        sr_core::sr::InsDel {
            steps: self.insertion_deletion_steps,
            insertion_baseline: self.insertion_baseline,
            deletion_baseline: self.deletion_baseline,
            blur_sigma: self.blur_sigma,
        }
    }
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            ssim: true,
            emd: false,
            emd_cells: 16,
            aopc: false,
            aopc_steps: 50,
            aopc_patch: 8,
            aopc_fill: sr_core::metrics::Fill::Uniform,
            insertion_deletion: false,
            insertion_deletion_steps: 32,
            insertion_baseline: sr_core::metrics::Baseline::Blur,
            deletion_baseline: sr_core::metrics::Baseline::Zeros,
            blur_sigma: 5.0,
            randomization: Randomization::None,
            randomization_steps: 4,
            randomization_samples: 1,
            randomization_noise: 0.1,
            seed: 0,
        }
    }
}

/// The bounds of `[metrics]`: each AOPC step costs a forward pass; a patch wider than any model
/// input flips everything. An error gives the key and what was expected.
pub fn check_metrics(m: &MetricsSpec) -> Result<(), (&'static str, String)> {
    for (key, value, max) in [
        ("aopc_steps", m.aopc_steps, MAX_AOPC_STEPS),
        ("aopc_patch", m.aopc_patch, MAX_AOPC_PATCH),
        (
            "insertion_deletion_steps",
            m.insertion_deletion_steps,
            MAX_AOPC_STEPS,
        ),
        ("emd_cells", m.emd_cells, MAX_EMD_CELLS),
        (
            "randomization_samples",
            m.randomization_samples,
            MAX_RANDOMIZATION_SAMPLES,
        ),
    ] {
        if !(1..=max).contains(&value) {
            return Err((
                key,
                format!("expected an integer from 1 to {max}, got {value}"),
            ));
        }
    }
    if m.randomization_steps > MAX_RANDOMIZATION_STEPS {
        return Err((
            "randomization_steps",
            format!(
                "expected 0 (every layer a step) to {MAX_RANDOMIZATION_STEPS}, got {}",
                m.randomization_steps
            ),
        ));
    }
    if !(m.randomization_noise > 0.0 && m.randomization_noise <= MAX_RANDOMIZATION_NOISE) {
        return Err((
            "randomization_noise",
            format!(
                "expected a share of the input's range above 0 and at most {MAX_RANDOMIZATION_NOISE}, got {}",
                m.randomization_noise
            ),
        ));
    }
    if !(m.blur_sigma > 0.0 && m.blur_sigma <= MAX_BLUR_SIGMA) {
        return Err((
            "blur_sigma",
            format!(
                "expected a number of pixels above 0 and at most {MAX_BLUR_SIGMA}, got {}",
                m.blur_sigma
            ),
        ));
    }
    Ok(())
}

/// Each randomization step costs a relevance pass and a saliency map per branch.
const MAX_RANDOMIZATION_STEPS: usize = 1000;

/// Each sample of the smooth MPRT costs a relevance pass per step and branch.
const MAX_RANDOMIZATION_SAMPLES: usize = 1000;

/// Noise of ten times the input's range drowns any input.
const MAX_RANDOMIZATION_NOISE: f64 = 10.0;

/// The EMD's cost grows faster than cells^6 (32 cells: about 21 s per map).
const MAX_EMD_CELLS: usize = 32;

/// A blur wider than this flattens any model input; the kernel's radius is 3 sigma.
const MAX_BLUR_SIGMA: f32 = 100.0;

/// `[run]` as the file gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunTable {
    images: Strings,
    #[serde(default = "default_output")]
    output: String,
    #[serde(default)]
    target: Option<toml::Value>,
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    fixations: Option<String>,
    #[serde(default)]
    select: Select,
    #[serde(default = "yes")]
    recursive: bool,
    #[serde(default)]
    shard: Option<String>,
    #[serde(default = "default_max_pixels")]
    max_pixels: u64,
    #[serde(default)]
    allow_truncated: bool,
}

fn default_max_pixels() -> u64 {
    sr_core::preprocess::DEFAULT_MAX_PIXELS
}

fn yes() -> bool {
    true
}

fn default_output() -> String {
    "out".into()
}

/// A string or an array of strings.
struct Strings(Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings (files, folders or globs)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Strings, A::Error> {
                let mut v = vec![];
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Strings(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The field names of the serde struct `T` (what its `deny_unknown_fields` accepts), read off
/// its `Deserialize` impl.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Deserializer, Visitor};
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Probe(std::cell::Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let p = Probe(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&p);
    p.0.get()
}

/// The key of the `key = value` line where `span` (an error's place in `text`) starts, when
/// the span lies within that line.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    if span.end > end + 1 {
        return None;
    }
    let (key, _) = text[start..end].split_once('=')?;
    Some(key.trim().trim_matches('"').to_string())
}

/// The most region-perturbation steps (each a forward pass) and the widest patch.
const MAX_AOPC_STEPS: usize = 10_000;
const MAX_AOPC_PATCH: usize = 1024;

/// Model parameters that name a file that must exist (`srhost check` refuses a missing one).
const MODEL_FILE_KEYS: &[&str] = &["weights", "path"];

/// How many keys a `--set` path may have.
const MAX_SET_DEPTH: usize = 8;

/// `${NAME}` / `${NAME:-default}` substitution with `lookup`; `$$` is not special.
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{s}`: `${{` without a closing `}}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a variable name"));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("the environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

const TOP_KEYS: &[&str] = &[
    "run",
    "model",
    "relevance",
    "saliency",
    "render",
    "metrics",
    "plugin",
];
/// Which images get relevance, saliency and renderers (`run.select`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    #[default]
    All,
    /// Only those the model gets wrong (per `run.labels`): the paper's Sec. 4.2.
    Wrong,
    /// Only those it gets right.
    Right,
}

impl Select {
    /// Whether an image whose prediction is `correct` (None: no label) is processed.
    pub fn keeps(self, correct: Option<bool>) -> bool {
        match self {
            Select::All => true,
            Select::Wrong => correct == Some(false),
            Select::Right => correct == Some(true),
        }
    }
}

pub use sr_core::sr::{RelevanceInput, Target};

/// The parsed but not yet validated spec: values plus the source for locating keys.
pub struct RawSpec {
    pub file: String,
    text: String,
    doc: Option<toml_edit::Document<String>>,
    pub table: toml::Table,
    /// Keys set on the command line (shown as "from --set" in errors).
    overridden: Vec<String>,
}

impl RawSpec {
    pub fn read(path: &Path, sets: &[String]) -> Result<Self, SpecError> {
        let file = path.display().to_string();
        let text = sr_core::io::read_text_bounded(
            path,
            sr_core::io::MAX_PIPELINE_BYTES,
            "a pipeline file",
        )
        .map_err(|e| SpecError {
            file: file.clone(),
            key: None,
            line: None,
            message: format!("cannot read the pipeline file: {}", e.message),
            help: "give the path of a pipeline TOML file, e.g. configs/sr.toml".into(),
        })?;
        Self::parse(&file, &text, sets)
    }

    pub fn parse(file: &str, text: &str, sets: &[String]) -> Result<Self, SpecError> {
        let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            SpecError {
                file: file.into(),
                key: None,
                line,
                message: format!("not valid TOML: {}", e.message()),
                help: String::new(),
            }
        })?;
        let table: toml::Table = toml::from_str(text).map_err(|e| SpecError {
            file: file.into(),
            key: None,
            line: e.span().map(|s| line_of(text, s.start)),
            message: format!("not valid TOML: {}", e.message()),
            help: String::new(),
        })?;
        let mut raw = RawSpec {
            file: file.into(),
            text: text.into(),
            doc: Some(doc),
            table,
            overridden: vec![],
        };
        for s in sets {
            raw.apply_set(s)?;
        }
        let mut table = std::mem::take(&mut raw.table);
        let r = raw.expand_env(&mut table, &mut vec![]);
        raw.table = table;
        r?;
        Ok(raw)
    }

    /// Replace `${NAME}` and `${NAME:-default}` in every string value by the environment
    /// variable (or the default when it is unset or empty), so configs can take weight paths
    /// from the environment. An unset variable without a default is an error naming the key.
    fn expand_env(&self, v: &mut toml::Table, path: &mut Vec<String>) -> Result<(), SpecError> {
        for (k, val) in v.iter_mut() {
            path.push(k.clone());
            self.expand_value(val, path)?;
            path.pop();
        }
        Ok(())
    }

    fn expand_value(&self, val: &mut toml::Value, path: &mut Vec<String>) -> Result<(), SpecError> {
        match val {
            toml::Value::String(s) if s.contains("${") => {
                let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                *s = expand_vars(s, |n| std::env::var(n).ok().filter(|v| !v.is_empty())).map_err(
                    |m| {
                        self.error(
                            &keys,
                            m,
                            "set the variable, or give a default: ${NAME:-default}",
                        )
                    },
                )?;
            }
            toml::Value::Table(t) => self.expand_env(t, path)?,
            toml::Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    path.push(i.to_string());
                    self.expand_value(x, path)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `table.key=value`: the value is read as TOML, or as a plain string when it is not TOML.
    fn apply_set(&mut self, set: &str) -> Result<(), SpecError> {
        let err = |m: String| {
            SpecError {
            file: "--set".into(),
            key: None,
            line: None,
            message: m,
            help: "write --set table.key=value, e.g. --set run.output=\"out/b\" or --set relevance.lrp.epsilon=0.25"
                .into(),
        }
        };
        let (path, value) = set
            .split_once('=')
            .ok_or_else(|| err(format!("`{set}` has no `=`")))?;
        let keys: Vec<&str> = path.trim().split('.').map(str::trim).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(err(format!("`{path}` is not a key path")));
        }
        // Pipelines nest three levels (`relevance.lrp.rules`); a deeper path is a mistake, and
        // a very deep one would exhaust the stack of the TOML writer.
        if keys.len() > MAX_SET_DEPTH {
            return Err(err(format!(
                "`{}...` is {} keys deep; --set takes at most {MAX_SET_DEPTH}",
                keys[..3].join("."),
                keys.len()
            )));
        }
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        let mut t = &mut self.table;
        for k in &keys[..keys.len() - 1] {
            let entry = t
                .entry(k.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            t = entry
                .as_table_mut()
                .ok_or_else(|| err(format!("`{path}`: `{k}` is a value, not a table")))?;
        }
        t.insert(keys[keys.len() - 1].to_string(), value);
        self.overridden.push(path.trim().to_string());
        Ok(())
    }

    /// The line of a key path (`relevance.lrp.epsilon`, `plugin.0.path`), if it is in the file.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut span = None;
        let mut i = 0;
        while i < path.len() {
            let (key, next) = table.get_key_value(path[i])?;
            span = key.span().or_else(|| next.span()).or(span);
            i += 1;
            if i == path.len() {
                break;
            }
            if let Some(aot) = next.as_array_of_tables() {
                let t = aot.get(path[i].parse().ok()?)?;
                span = t.span().or(span);
                i += 1;
                table = t;
            } else {
                table = next.as_table_like()?;
            }
        }
        span.map(|s| line_of(&self.text, s.start))
    }

    fn error(
        &self,
        path: &[&str],
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> SpecError {
        let key = path.join(".");
        let from_set = self
            .overridden
            .iter()
            .any(|o| key == *o || key.starts_with(&format!("{o}.")));
        SpecError {
            file: if from_set {
                format!("{} (--set)", self.file)
            } else {
                self.file.clone()
            },
            line: if from_set { None } else { self.line(path) },
            key: if key.is_empty() { None } else { Some(key) },
            message: message.into(),
            help: help.into(),
        }
    }

    /// The `[[plugin]] path = ...` entries; read before validation so their stages are known.
    pub fn plugin_paths(&self) -> Result<Vec<PathBuf>, SpecError> {
        let Some(v) = self.table.get("plugin") else {
            return Ok(vec![]);
        };
        let Some(arr) = v.as_array() else {
            return Err(self.error(
                &["plugin"],
                "expected an array of tables",
                "write [[plugin]] then path = \"lib.so\"",
            ));
        };
        let mut out = vec![];
        for (i, p) in arr.iter().enumerate() {
            let idx = i.to_string();
            let Some(t) = p.as_table() else {
                return Err(self.error(&["plugin", &idx], "expected a table with `path`", ""));
            };
            for k in t.keys() {
                if k != "path" {
                    return Err(self.error(
                        &["plugin", &idx, k],
                        "unknown key",
                        "a [[plugin]] table has one key: path",
                    ));
                }
            }
            match t.get("path").and_then(|v| v.as_str()) {
                Some(s) => out.push(PathBuf::from(s)),
                None => {
                    return Err(self.error(
                        &["plugin", &idx],
                        "missing `path` (a string)",
                        "path = \"target/debug/libmy_plugin.so\"",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Check the whole spec against the registry: unknown tables, keys and stages, wrong types,
    /// images that do not exist or globs that match nothing.
    pub fn validate(&self, registry: &Registry) -> Result<Pipeline, SpecError> {
        for k in self.table.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(self.error(
                    &[k],
                    "unknown table",
                    format!(
                        "expected one of: {}{}",
                        TOP_KEYS.join(", "),
                        suggest(k, TOP_KEYS)
                    ),
                ));
            }
        }
        // [run]
        let run: RunTable = match self.table.get("run") {
            Some(v) => self.typed(&["run"], v)?,
            None => {
                return Err(self.error(
                    &[],
                    "missing the [run] table",
                    "add [run] with images = [\"assets/images/*.png\"]",
                ))
            }
        };
        let mut files = vec![];
        // The output folder is never collected as input, even when it lies inside an input
        // folder (outputs would be re-collected as photos on every rerun).
        let exclude = std::fs::canonicalize(&run.output).ok();
        let mut skipped = crate::dataset::Skipped::default();
        for p in &run.images.0 {
            files.extend(
                crate::dataset::expand(p, run.recursive, exclude.as_deref(), &mut skipped)
                    .map_err(|m| {
                        self.error(
                            &["run", "images"],
                            m,
                            "paths are relative to the current directory",
                        )
                    })?,
            );
        }
        for (dir, err) in &skipped.unreadable {
            eprintln!(
                "warning: `run.images`: skipped the folder {} (cannot read it: {err})",
                dir.display()
            );
        }
        let entries = crate::dataset::entries(files);
        if entries.is_empty() {
            return Err(self.error(
                &["run", "images"],
                "the list is empty",
                "give at least one image",
            ));
        }
        if run.output.trim().is_empty() {
            return Err(self.error(
                &["run", "output"],
                "the output folder is empty",
                "name a folder, e.g. output = \"out/sr\" (\".\" for the current directory)",
            ));
        }
        let output = PathBuf::from(&run.output);
        if run.max_pixels == 0 {
            return Err(self.error(
                &["run", "max_pixels"],
                "expected a number of pixels >= 1",
                "",
            ));
        }
        let target = match &run.target {
            None => Target::default(),
            Some(toml::Value::Integer(i)) if *i >= 0 => Target::Class(*i as usize),
            Some(toml::Value::String(s)) => s
                .parse::<Target>()
                .map_err(|m| self.error(&["run", "target"], m, ""))?,
            Some(_) => {
                return Err(self.error(
                    &["run", "target"],
                    "expected \"topK\", a class index or a label name",
                    "target = \"top1\" (the default), target = 967 or target = \"espresso\"",
                ))
            }
        };
        let labels = match run.labels.as_deref() {
            None => crate::dataset::Labels::None,
            Some("folders") => crate::dataset::Labels::Folders,
            Some(f) => crate::dataset::Labels::Table(
                crate::dataset::read_labels_csv(Path::new(f)).map_err(|m| {
                    self.error(
                        &["run", "labels"],
                        m,
                        "\"folders\" (each image's folder is its class), or a CSV file: rows `image,label`, or a header with `image` and `index`, `wnid`, `label` or `class`",
                    )
                })?,
            ),
        };
        let shard = match &run.shard {
            None => None,
            Some(s) => Some(s.parse::<crate::dataset::Shard>().map_err(|m| {
                self.error(
                    &["run", "shard"],
                    m,
                    "with Slurm: shard = \"${SLURM_ARRAY_TASK_ID}/100\" and sbatch --array=0-99",
                )
            })?),
        };
        let fixations = match run.fixations.as_deref() {
            None => None,
            Some(f) => {
                let path = PathBuf::from(f);
                if !path.is_dir() {
                    return Err(self.error(
                        &["run", "fixations"],
                        format!("`{f}` is not a folder"),
                        "fixations = \"fixations/\": per image a fixation map (<image>.png) or a point list (<image>.csv, `x,y` per line)",
                    ));
                }
                Some(path)
            }
        };
        let metrics = self.metrics()?;
        let select = run.select;
        if select != Select::All && labels.is_none() {
            return Err(self.error(
                &["run", "select"],
                "selecting right or wrong predictions needs the ground truth",
                "add labels = \"labels.csv\" (rows `image,label`) to [run]",
            ));
        }
        let model = match self.table.get("model") {
            None => None,
            Some(v) => Some(self.stage(&["model"], v, StageKind::Model, registry)?),
        };
        let mut relevance = vec![];
        if let Some(v) = self.table.get("relevance") {
            let t = v.as_table().ok_or_else(|| {
                self.error(
                    &["relevance"],
                    "expected tables, one per branch",
                    "[relevance.lrp_eps]\nuse = \"lrp\"",
                )
            })?;
            for (branch, bv) in t {
                if !branch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(self.error(
                        &["relevance", branch],
                        "branch names may hold letters, digits, `_` and `-` only",
                        "they name output files",
                    ));
                }
                relevance.push((
                    branch.clone(),
                    self.stage(&["relevance", branch], bv, StageKind::Relevance, registry)?,
                ));
            }
            if model.is_none() && !relevance.is_empty() {
                return Err(self.error(
                    &["relevance"],
                    "relevance branches need a [model]",
                    "add a [model] table",
                ));
            }
        }
        let mut relevance_input = RelevanceInput::default();
        let saliency = match self.table.get("saliency") {
            None => None,
            Some(v) => {
                // `relevance_input` belongs to the host (any saliency stage takes it).
                let mut t = v.as_table().cloned().unwrap_or_default();
                if let Some(ri) = t.remove("relevance_input") {
                    relevance_input = ri
                        .as_str()
                        .ok_or_else(|| "expected a string".to_string())
                        .and_then(str::parse)
                        .map_err(|m| {
                            self.error(
                                &["saliency", "relevance_input"],
                                format!("{m}; expected \"abs-rgb\", \"abs-sum\" or \"positive\""),
                                "abs-rgb (the default) is the paper's code",
                            )
                        })?;
                }
                let v = if v.is_table() {
                    toml::Value::Table(t)
                } else {
                    v.clone()
                };
                Some(self.stage(&["saliency"], &v, StageKind::Saliency, registry)?)
            }
        };
        let mut renderers = vec![];
        if let Some(v) = self.table.get("render") {
            let t = v.as_table().ok_or_else(|| {
                self.error(
                    &["render"],
                    "expected a table",
                    "[render]\nuse = [\"heatmap\"]",
                )
            })?;
            let names: Vec<String> = match t.get("use") {
                Some(toml::Value::String(s)) => vec![s.clone()],
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        self.error(&["render", "use"], "expected renderer names (strings)", "")
                    })?,
                Some(_) => {
                    return Err(self.error(
                        &["render", "use"],
                        "expected a string or an array of strings",
                        "",
                    ))
                }
                None => {
                    return Err(self.error(&["render"], "missing `use`", "use = [\"heatmap\"]"))
                }
            };
            for k in t.keys() {
                if k != "use" && !names.contains(k) {
                    return Err(self.error(
                        &["render", k],
                        "parameters for a renderer that is not in `render.use`",
                        format!("add \"{k}\" to render.use, or remove the table"),
                    ));
                }
            }
            for n in &names {
                let mut params = match t.get(n) {
                    Some(toml::Value::Table(p)) => p.clone(),
                    Some(_) => {
                        return Err(self.error(
                            &["render", n],
                            "expected a table of parameters",
                            "",
                        ))
                    }
                    None => toml::Table::new(),
                };
                params.insert("use".into(), toml::Value::String(n.clone()));
                renderers.push(self.stage(
                    &["render", n],
                    &toml::Value::Table(params),
                    StageKind::Renderer,
                    registry,
                )?);
            }
        }
        let resolved_toml = toml::to_string(&self.table).unwrap_or_default();
        Ok(Pipeline {
            file: self.file.clone(),
            entries,
            shard,
            output,
            plugins: self.plugin_paths()?,
            model,
            relevance,
            saliency,
            relevance_input,
            renderers,
            target,
            resolved_toml,
            labels_spec: run.labels.clone(),
            fixations,
            labels,
            photo_limits: sr_core::preprocess::PhotoLimits {
                max_pixels: run.max_pixels,
                allow_truncated: run.allow_truncated,
            },
            metrics,
            select,
        })
    }

    fn metrics(&self) -> Result<MetricsSpec, SpecError> {
        let Some(v) = self.table.get("metrics") else {
            return Ok(MetricsSpec::default());
        };
        let m: MetricsSpec = self.typed(&["metrics"], v)?;
        check_metrics(&m).map_err(|(key, msg)| self.error(&["metrics", key], msg, ""))?;
        Ok(m)
    }

    /// The table at `path` as the serde struct `T`: a key `T` does not declare is an "unknown
    /// key" error at its line with the known keys and a "did you mean"; a value of the wrong
    /// type is an error at its key's line.
    fn typed<T: DeserializeOwned>(&self, path: &[&str], v: &toml::Value) -> Result<T, SpecError> {
        let t = v
            .as_table()
            .ok_or_else(|| self.error(path, "expected a table", ""))?;
        let fields = fields_of::<T>();
        if let Some(k) = t.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(self.error(
                &[path, &[k.as_str()]].concat(),
                "unknown key",
                format!(
                    "[{}] keys: {}{}",
                    path.join("."),
                    fields.join(", "),
                    suggest(k, fields)
                ),
            ));
        }
        let text = toml::to_string(t).unwrap_or_default();
        toml::from_str::<T>(&text).map_err(|e| {
            match e.span().and_then(|span| key_at(&text, span)) {
                Some(k) => self.error(&[path, &[k.as_str()]].concat(), e.message(), ""),
                None => self.error(path, e.message(), ""),
            }
        })
    }

    /// The `[model]` table alone (for `srhost classify`). Without `use`, the built-in torchvision
    /// backend, whose defaults are the shipped EfficientNet-Lite0.
    pub fn model_spec(&self, registry: &Registry) -> Result<StageSpec, SpecError> {
        let mut t = match self.table.get("model") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err(self.error(&["model"], "expected a table", "")),
            None => toml::Table::new(),
        };
        t.entry("use")
            .or_insert_with(|| toml::Value::String("torchvision".into()));
        self.stage(
            &["model"],
            &toml::Value::Table(t),
            StageKind::Model,
            registry,
        )
    }

    fn stage(
        &self,
        path: &[&str],
        v: &toml::Value,
        kind: StageKind,
        registry: &Registry,
    ) -> Result<StageSpec, SpecError> {
        let t = v
            .as_table()
            .ok_or_else(|| self.error(path, "expected a table", "with use = \"<stage name>\""))?;
        let name = match t.get("use") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(self.error(
                    &[path, &["use"]].concat(),
                    "expected a string (a stage name)",
                    "",
                ))
            }
            None => {
                let known = registry.names(kind);
                return Err(self.error(
                    path,
                    format!("missing `use` (which {} stage)", kind_name(kind)),
                    format!("known {} stages: {}", kind_name(kind), list_or_none(&known)),
                ));
            }
        };
        let entry = registry
            .lookup(kind, &name)
            .map_err(|e| self.error(&[path, &["use"]].concat(), e.message, e.help))?;
        let mut params = t.clone();
        params.remove("use");
        check_params(&entry.info, &params)
            .map_err(|e| self.error(&[path, &[e.key.as_str()]].concat(), e.message, e.help))?;
        if kind == StageKind::Model {
            // The files a model is loaded from are checked now, not when the run starts.
            for key in MODEL_FILE_KEYS {
                if let Some(toml::Value::String(f)) = params.get(*key) {
                    if !sr_core::resolve_path(f).is_file() {
                        return Err(self.error(
                            &[path, &[*key]].concat(),
                            format!("no such file: `{f}`"),
                            "paths are relative to the current directory (or the srhost source tree, for the shipped assets)",
                        ));
                    }
                }
            }
        }
        if kind == StageKind::Relevance {
            // A relevance stage is cheap to build (its parameters parsed and checked, no model
            // loaded), so it is built now: its own checks (a folder that must exist, a rule
            // that does not parse) fail `srhost check`, at the key they name.
            let text = toml::to_string(&params).unwrap_or_default();
            if let Err(e) = registry.create_relevance(&name, &text) {
                let stage = format!("stage `{}`: ", entry.info.key());
                let message = e.message.strip_prefix(&stage).unwrap_or(&e.message);
                let key = message.strip_prefix('`').and_then(|m| {
                    let (k, rest) = m.split_once('`')?;
                    let rest = rest.strip_prefix(':')?.trim_start();
                    entry
                        .info
                        .params
                        .iter()
                        .any(|p| p.key == k)
                        .then_some((k, rest))
                });
                return Err(match key {
                    Some((k, rest)) => self.error(&[path, &[k]].concat(), rest, e.help),
                    None => self.error(path, message, e.help),
                });
            }
        }
        Ok(StageSpec {
            table: path.join("."),
            name,
            params_toml: toml::to_string(&params).unwrap_or_default(),
        })
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none loaded".into()
    } else {
        v.join(", ")
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_expand_with_defaults_and_unset_ones_are_errors() {
        let env = |n: &str| (n == "W").then(|| "vgg16.pth".to_string());
        assert_eq!(expand_vars("a/${W}/b", env).unwrap(), "a/vgg16.pth/b");
        assert_eq!(
            expand_vars("${X:-alexnet}-${W}", env).unwrap(),
            "alexnet-vgg16.pth"
        );
        assert_eq!(expand_vars("no vars", env).unwrap(), "no vars");
        assert!(expand_vars("${X}", env)
            .unwrap_err()
            .contains("`X` is not set"));
        assert!(expand_vars("${W", env)
            .unwrap_err()
            .contains("without a closing"));
        assert!(expand_vars("${a b}", env)
            .unwrap_err()
            .contains("not a variable name"));
    }
}
