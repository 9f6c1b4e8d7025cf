//! The srhost library: what the `srhost` command runs, reachable from other crates (the Python
//! package, the fuzz targets). `spec` reads and checks a pipeline TOML, `stages` builds its
//! stages from a [`sr_core::Registry`], `runner` runs it over the images, `report` writes the
//! run-wide tables.

pub mod dataset;
pub mod fingerprint;
pub mod fixations;
pub mod process;
pub mod randomization;
pub mod records;
pub mod report;
pub mod runner;
pub mod spec;
pub mod stages;

/// Every built-in stage: those `inventory` registered, and (whether or not the linker kept
/// those registrations; a cdylib such as the Python module may lose some) each built-in plugin
/// crate's `SR_STAGES`, named here so that they are linked.
pub fn registry() -> sr_core::Registry {
    let mut r = sr_core::Registry::with_builtins();
    for (plugin, defs) in [
        ("sr-backend-onnx", sr_backend_onnx::SR_STAGES),
        ("sr-backend-torchvision", sr_backend_torchvision::SR_STAGES),
        ("sr-relevance-gradient", sr_relevance_gradient::SR_STAGES),
        ("sr-relevance-file", sr_relevance_file::SR_STAGES),
        ("sr-relevance-lrp", sr_relevance_lrp::SR_STAGES),
        ("sr-render-basic", sr_render_basic::SR_STAGES),
        (
            "sr-saliency-context-aware",
            sr_saliency_context_aware::SR_STAGES,
        ),
        ("sr-saliency-itti", sr_saliency_itti::SR_STAGES),
    ] {
        r.add_builtins(plugin, defs);
    }
    r
}

use sr_core::Registry;

/// `srhost`'s exit codes.
pub mod exit {
    /// Everything asked was done.
    pub const OK: u8 = 0;
    /// Some images failed (the rest is written), or the run's tables could not be written.
    pub const FAILED: u8 = 1;
    /// A bad invocation, pipeline or stage: nothing ran.
    pub const USAGE: u8 = 2;
}

/// An error that ends a command, with its exit code ([`exit::FAILED`] or [`exit::USAGE`]).
#[derive(Debug)]
pub struct Fail(pub u8, pub String);

/// What [`execute`] did.
pub struct Executed {
    pub summary: runner::Summary,
    /// The configuration's fingerprint (`result.json` records it; see [`fingerprint::of`]).
    pub fingerprint: String,
}

/// Run a validated pipeline: build its stages, process every image (resuming where
/// `result.json` allows), record the run's provenance in `run.json` and rebuild the run-wide
/// tables and `report.html`. What `srhost run` and Python's `srhost.run` do.
pub fn execute(
    pipeline: &spec::Pipeline,
    reg: &Registry,
    opts: runner::RunOptions,
) -> Result<Executed, Fail> {
    let started = std::time::Instant::now();
    if opts.jobs > runner::MAX_JOBS {
        return Err(Fail(
            exit::USAGE,
            format!(
                "--jobs {}: at most {} worker threads",
                opts.jobs,
                runner::MAX_JOBS
            ),
        ));
    }
    let fingerprint =
        fingerprint::of(pipeline, reg).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    let stages =
        stages::build_stages(pipeline, reg).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    let summary = runner::run(pipeline, &stages, opts, &fingerprint)
        .map_err(|e| Fail(exit::FAILED, e.to_string()))?;
    let provenance = serde_json::json!({
        "srhost": env!("CARGO_PKG_VERSION"),
        "abi": sr_core::abi::ABI_VERSION,
        "pipeline": pipeline.file,
        "config": pipeline.resolved_toml,
        "fingerprint": fingerprint,
        "host": records::host_name(),
        "shard": pipeline.shard.map(|s| format!("{}/{}", s.index, s.count)),
        "stages": reg.entries().map(|e| serde_json::json!({
            "key": e.info.key(), "version": e.info.version, "source": e.source.to_string(),
        })).collect::<Vec<_>>(),
        "images": summary.images,
        "done": summary.done,
        "skipped": summary.skipped,
        "busy": summary.busy,
        "redone": summary.redone.iter().map(|(f, old)| serde_json::json!({
            "folder": f, "old_fingerprint": old,
        })).collect::<Vec<_>>(),
        "repaired": summary.repaired.iter().map(|(f, files)| serde_json::json!({
            "folder": f, "missing": files,
        })).collect::<Vec<_>>(),
        "undone": summary.undone(),
        "left_to_others": summary.busy_folders,
        "failed": summary.failed.iter().map(|(p, e)| serde_json::json!({
            "image": p.display().to_string(), "error": e.to_string(),
        })).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    report::record_run(&pipeline.output, &provenance)
        .map_err(|e| Fail(exit::FAILED, e.to_string()))?;
    report::rebuild(&pipeline.output, &pipeline.file, Some(&fingerprint))
        .map_err(|e| Fail(exit::FAILED, e.to_string()))?;
    Ok(Executed {
        summary,
        fingerprint,
    })
}
