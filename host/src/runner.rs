//! Runs a validated pipeline over its images: in parallel, resumable, never losing finished
//! outputs (every file is written to a temporary name and renamed into place, and an image
//! counts as done only once its `result.json` exists). One image is [`crate::process`].

use crate::records::{self, output_names, remove_stale_temps, RESULT_FILE};
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
    pub done: usize,
    pub skipped: usize,
    pub failed: Vec<(PathBuf, Error)>,
}

/// Run every image of `p` through `stages`, writing into `p.output`.
pub fn run(p: &Pipeline, stages: &Stages, opts: RunOptions) -> Result<Summary> {
    std::fs::create_dir_all(&p.output).map_err(|e| Error::io(&p.output, e))?;
    let names = output_names(&p.images);
    let pb = ProgressBar::new(p.images.len() as u64);
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
    enum Outcome {
        Done,
        Skipped,
        Failed(Error),
    }
    let outcomes: Vec<Outcome> = pool.install(|| {
        p.images
            .par_iter()
            .zip(names.par_iter())
            .map(|(img, name)| {
                let dir = p.output.join(name);
                let marker = dir.join(RESULT_FILE);
                let outcome = if marker.is_file() && !opts.force {
                    Outcome::Skipped
                } else {
                    if marker.is_file() {
                        let _ = std::fs::remove_file(&marker);
                    }
                    remove_stale_temps(&dir);
                    match sr_core::catch_panic(&format!("{}", img.display()), || {
                        crate::process::process(stages, p, img, &dir)
                    }) {
                        Ok(_) => Outcome::Done,
                        Err(e) => {
                            pb.suspend(|| eprintln!("error: {}: {e}", img.display()));
                            Outcome::Failed(e)
                        }
                    }
                };
                pb.inc(1);
                outcome
            })
            .collect()
    });
    pb.finish_and_clear();
    let mut s = Summary::default();
    for (o, img) in outcomes.into_iter().zip(&p.images) {
        match o {
            Outcome::Done => s.done += 1,
            Outcome::Skipped => s.skipped += 1,
            Outcome::Failed(e) => s.failed.push((img.clone(), e)),
        }
    }
    write_tables(p, &names)?;
    Ok(s)
}

/// `metrics.csv`, `metrics.json` and `report.html` from every finished image's `result.json`
/// (so a resumed run reports every image, not only those it redid).
fn write_tables(p: &Pipeline, names: &[String]) -> Result<()> {
    let mut rows = vec![];
    let mut done = vec![];
    for name in names {
        if let Some(r) = records::read_result(&p.output.join(name))? {
            rows.push(r);
            done.push(name.clone());
        }
    }
    crate::report::write_all(&p.output, &rows, &done, &p.file)?;
    Ok(())
}
