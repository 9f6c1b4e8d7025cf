//! A run's fingerprint: a hash of everything that decides an image's outputs. It is recorded
//! in every `result.json`; a rerun redoes the images whose fingerprint differs, so one table
//! never mixes two configurations.
//!
//! It covers: the srhost version and plugin ABI; every stage with its version, source and
//! parameters; the contents of every file a stage parameter names (model weights, label
//! lists, baselines); how relevance becomes the saliency input; the targets; `[metrics]`;
//! `run.select` and the ground truth (`run.labels` and the labels file's contents). It does
//! not cover where the images and outputs are, so moving a run keeps it.

use crate::spec::{Pipeline, StageSpec};
use sha2::{Digest, Sha256};
use sr_core::{Error, Registry, Result, StageKind};
use std::io::Read;

/// The fingerprint of `p` with the stages of `reg`, as 16 hex digits of a SHA-256.
pub fn of(p: &Pipeline, reg: &Registry) -> Result<String> {
    let mut h = Sha256::new();
    let mut line = |s: &str| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(&format!("srhost {}", env!("CARGO_PKG_VERSION")));
    line(&format!("abi {}", sr_core::abi::ABI_VERSION));
    let mut stages: Vec<(StageKind, &StageSpec)> = vec![];
    stages.extend(p.model.iter().map(|s| (StageKind::Model, s)));
    stages.extend(p.relevance.iter().map(|(_, s)| (StageKind::Relevance, s)));
    stages.extend(p.saliency.iter().map(|s| (StageKind::Saliency, s)));
    stages.extend(p.renderers.iter().map(|s| (StageKind::Renderer, s)));
    let mut files = vec![];
    for (kind, s) in stages {
        let entry = reg.lookup(kind, &s.name)?;
        line(&format!(
            "[{}] {} {}",
            s.table,
            entry.info.key(),
            entry.info.version
        ));
        line(&s.params_toml);
        let params: toml::Table = toml::from_str(&s.params_toml).unwrap_or_default();
        collect_files(&toml::Value::Table(params), &mut files);
    }
    line(&format!("relevance_input {:?}", p.relevance_input));
    line(&format!("target {:?}", p.target));
    line(&format!("metrics {:?}", p.metrics));
    line(&format!("select {:?}", p.select));
    line(&format!("labels {:?}", p.labels_spec));
    // The fixation files themselves are checked per image (their SHA-256 in result.json).
    line(&format!("fixations {:?}", p.fixations));
    if let Some(f) = p.labels_spec.as_deref().filter(|l| *l != "folders") {
        files.push(f.to_string());
    }
    for f in files {
        let path = sr_core::resolve_path(&f);
        line(&format!("file {f} {}", file_hash(&path)?));
    }
    let d = h.finalize();
    Ok(d[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The string values of a stage's parameters that name existing files.
fn collect_files(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) if !s.is_empty() && sr_core::resolve_path(s).is_file() => {
            out.push(s.clone())
        }
        toml::Value::Array(a) => a.iter().for_each(|x| collect_files(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| collect_files(x, out)),
        _ => {}
    }
}

/// SHA-256 of a file's contents, read in 1 MiB pieces.
fn file_hash(path: &std::path::Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
