//! Runs a validated pipeline over its images: in parallel, resumable, never losing finished
//! outputs (every file is written to a temporary name and renamed into place, and an image
//! counts as done only once its `result.json` exists and every file it lists is there at its
//! recorded size). One image is [`crate::process`].
//!
//! Resume: an image whose `result.json` carries this run's fingerprint and whose files are all
//! there is skipped; one with another fingerprint (another configuration, model file or srhost
//! version), or whose files vanished or changed, is redone, its old files removed first.
//! Several processes may share the output folder (shards): each image folder is claimed by one
//! process at a time for a renewed lease ([`records::claim`]), and the run-wide tables are
//! rebuilt under a lock from every finished image ([`crate::report::rebuild`]). Image folders
//! are made and entered without following symbolic links ([`records::image_dir`]).

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
    /// Images redone because files their `result.json` lists were missing or changed:
    /// `(folder, those files)`.
    pub repaired: Vec<(String, Vec<String>)>,
    /// The folders of the images left to another process (see `busy`): held by a process that
    /// kept renewing its claim for two leases while this one waited.
    pub busy_folders: Vec<String>,
    pub failed: Vec<(PathBuf, Error)>,
}

impl Summary {
    /// Images of this process's share that are not finished: failed, or left to another
    /// process that holds them.
    pub fn undone(&self) -> usize {
        self.failed.len() + self.busy
    }
}

/// Worker threads a run may start, at most.
pub const MAX_JOBS: usize = 256;

enum Outcome {
    Done,
    Redone(String),
    Repaired(Vec<String>),
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
    let dir = records::image_dir(&p.output, &e.name)?;
    let Some(_claim) = records::claim(&dir)? else {
        return Ok(Outcome::Busy);
    };
    let mut redo = None;
    let mut repair = None;
    if let Some(old) = records::read_result(&dir).unwrap_or(None) {
        let fixations_changed = fixations_changed(p, e, &old);
        if old.fingerprint == fingerprint && !opts.force && !fixations_changed {
            let missing = records::missing_outputs(&dir, &old);
            if missing.is_empty() {
                return Ok(Outcome::Skipped);
            }
            repair = Some(missing);
        }
        if old.fingerprint == fingerprint && fixations_changed {
            redo = Some(format!("{} (its fixation file changed)", old.fingerprint));
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
    Ok(match (redo, repair) {
        (Some(f), _) => Outcome::Redone(f),
        (None, Some(files)) => Outcome::Repaired(files),
        (None, None) => Outcome::Done,
    })
}

/// Whether the fixation file a finished image was measured against (`run.fixations`) has
/// changed or gone since: its SHA-256 against the one `result.json` recorded.
fn fixations_changed(p: &Pipeline, e: &Entry, old: &records::ImageResult) -> bool {
    let (Some(folder), Some(rec)) = (&p.fixations, &old.fixations) else {
        return false;
    };
    let now = crate::fixations::find(folder, &e.path, &e.root).and_then(|f| {
        sr_core::io::read_bounded(&f, crate::fixations::MAX_FIXATION_BYTES, "a fixation file")
            .map(|b| (f, b))
    });
    match now {
        Ok((f, bytes)) => {
            crate::fixations::sha256(&bytes) != rec.sha256 || f.display().to_string() != rec.file
        }
        Err(_) => true,
    }
}

/// Run this process's images of `p` (its shard, or all) through `stages`, writing into
/// `p.output`; `fingerprint` is recorded in every `result.json`.
pub fn run(p: &Pipeline, stages: &Stages, opts: RunOptions, fingerprint: &str) -> Result<Summary> {
    if opts.jobs > MAX_JOBS {
        return Err(Error::params(format!(
            "--jobs {}: at most {MAX_JOBS} worker threads",
            opts.jobs
        )));
    }
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
    let attempt = |e: &Entry| {
        one(p, stages, opts, fingerprint, e).unwrap_or_else(|err| {
            pb.suspend(|| eprintln!("error: {}: {err}", e.path.display()));
            Outcome::Failed(err)
        })
    };
    let mut outcomes: Vec<Outcome> = pool.install(|| {
        mine.par_iter()
            .map(|e| {
                let o = attempt(e);
                if !matches!(o, Outcome::Busy) {
                    pb.inc(1);
                }
                o
            })
            .collect()
    });
    // Images another process holds: wait until it finishes them (they are then skipped as
    // finished) or its claim lapses (they are then taken over), so that this process ends only
    // when its whole share is finished. A holder that keeps renewing for two leases is left
    // alone, and those images count as undone.
    let give_up = std::time::Instant::now() + 2 * records::lease();
    while outcomes.iter().any(|o| matches!(o, Outcome::Busy)) && std::time::Instant::now() < give_up
    {
        pb.set_message("waiting for images other processes hold");
        std::thread::sleep(std::time::Duration::from_millis(250));
        pool.install(|| {
            outcomes
                .par_iter_mut()
                .zip(&mine)
                .filter(|(o, _)| matches!(o, Outcome::Busy))
                .for_each(|(o, e)| {
                    *o = attempt(e);
                    if !matches!(o, Outcome::Busy) {
                        pb.inc(1);
                    }
                })
        });
    }
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
            Outcome::Repaired(files) => {
                s.done += 1;
                s.repaired.push((e.name.clone(), files));
            }
            Outcome::Skipped => s.skipped += 1,
            Outcome::Busy => {
                s.busy += 1;
                s.busy_folders.push(e.name.clone());
            }
            Outcome::Failed(err) => s.failed.push((e.path.clone(), err)),
        }
    }
    Ok(s)
}
