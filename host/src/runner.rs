//! Runs a validated pipeline over its images: in parallel, resumable, never losing finished
//! outputs (every file is written to a temporary name and renamed into place, and an image
//! counts as done only once its `result.json` exists). One image is [`crate::process`].
//!
//! Resume: an image whose `result.json` carries this run's fingerprint is skipped; one with
//! another fingerprint (another configuration, model file or srhost version) is redone, its old
//! files removed first. Several processes may share the output folder (shards): each image
//! folder is claimed by one process at a time, and the run-wide tables are rebuilt under a lock
//! from every finished image ([`crate::report::rebuild`]).

use crate::dataset::Entry;
use crate::records;
use crate::spec::Pipeline;
use crate::stages::Stages;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use sr_core::{Error, Result};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Worker threads; 0 uses every core.
    pub jobs: usize,
    /// Redo images whose outputs already exist.
    pub force: bool,
}

/// What happened to the images of a run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Images this process took (its shard).
    pub images: usize,
    pub done: usize,
    pub skipped: usize,
    /// Images claimed by another live process (another shard working in the same folder).
    pub busy: usize,
    /// Finished images redone because their fingerprint differed: `(folder, their
    /// fingerprint)`.
    pub redone: Vec<(String, String)>,
    pub failed: Vec<(PathBuf, Error)>,
}

enum Outcome {
    Done,
    Redone(String),
    Skipped,
    Busy,
    Failed(Error),
}

/// One image: claim its folder, skip or clear what is there, process it.
fn one(
    p: &Pipeline,
    stages: &Stages,
    opts: RunOptions,
    fingerprint: &str,
    e: &Entry,
) -> Result<Outcome> {
    let dir = p.output.join(&e.name);
    let Some(_claim) = records::claim(&dir)? else {
        return Ok(Outcome::Busy);
    };
    let mut redo = None;
    if let Some(old) = records::read_result(&dir).unwrap_or(None) {
        if old.fingerprint == fingerprint && !opts.force {
            return Ok(Outcome::Skipped);
        }
        if old.fingerprint != fingerprint {
            redo = Some(if old.fingerprint.is_empty() {
                "none (an older srhost)".to_string()
            } else {
                old.fingerprint.clone()
            });
        }
        records::clear_outputs(&dir, &old);
    } else if dir.join(records::RESULT_FILE).exists() {
        // A result.json that does not parse: the image is redone.
        let _ = std::fs::remove_file(dir.join(records::RESULT_FILE));
    }
    records::remove_stale_temps(&dir);
    sr_core::catch_panic(&format!("{}", e.path.display()), || {
        crate::process::process(stages, p, e, &dir, fingerprint)
    })?;
    Ok(match redo {
        Some(f) => Outcome::Redone(f),
        None => Outcome::Done,
    })
}

/// Run this process's images of `p` (its shard, or all) through `stages`, writing into
/// `p.output`; `fingerprint` is recorded in every `result.json`.
pub fn run(p: &Pipeline, stages: &Stages, opts: RunOptions, fingerprint: &str) -> Result<Summary> {
    std::fs::create_dir_all(&p.output).map_err(|e| Error::io(&p.output, e))?;
    let mine: Vec<Entry> = match p.shard {
        Some(s) => s.take(p.entries.clone()),
        None => p.entries.clone(),
    };
    let pb = ProgressBar::new(mine.len() as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .map_err(|e| Error::internal(format!("cannot start {} worker threads: {e}", opts.jobs)))?;
    let outcomes: Vec<Outcome> = pool.install(|| {
        mine.par_iter()
            .map(|e| {
                let o = one(p, stages, opts, fingerprint, e).unwrap_or_else(|err| {
                    pb.suspend(|| eprintln!("error: {}: {err}", e.path.display()));
                    Outcome::Failed(err)
                });
                pb.inc(1);
                o
            })
            .collect()
    });
    pb.finish_and_clear();
    let mut s = Summary {
        images: mine.len(),
        ..Default::default()
    };
    for (o, e) in outcomes.into_iter().zip(&mine) {
        match o {
            Outcome::Done => s.done += 1,
            Outcome::Redone(f) => {
                s.done += 1;
                s.redone.push((e.name.clone(), f));
            }
            Outcome::Skipped => s.skipped += 1,
            Outcome::Busy => s.busy += 1,
            Outcome::Failed(err) => s.failed.push((e.path.clone(), err)),
        }
    }
    Ok(s)
}
