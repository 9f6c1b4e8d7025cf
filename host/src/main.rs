//! `srhost`: Salient Relevance maps, where a CNN classifier looks.
//!
//! Exit codes ([`srhost::exit`]): 0 ok, 1 some images failed or were left undone, 2 bad
//! invocation or spec, or an internal error.

use clap::{Parser, Subcommand};
use sr_core::{kind_name, LoadedPlugin, Registry};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Large freed buffers (activations, relevance) are kept for the next image: see
/// `sr_nn::alloc`.
#[global_allocator]
static ALLOC: sr_nn::alloc::ReuseLarge = sr_nn::alloc::ReuseLarge;

use srhost::{dataset, exit, report, runner, spec, Fail};

#[derive(Parser, Debug)]
#[command(
    name = "srhost",
    version,
    about = "Salient Relevance (SR) maps: where a CNN image classifier looks",
    after_help = "Exit codes: 0 ok, 1 some images failed or were left undone, 2 bad invocation or pipeline spec.\n\
                  Docs: docs/pipeline.md (every TOML key), docs/plugin-authoring.md."
)]
struct Cli {
    /// Run this pipeline TOML (same as `srhost run FILE`).
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Override one key of the pipeline, e.g. --set run.output=out/b (repeatable).
    #[arg(long = "set", value_name = "TABLE.KEY=VALUE", global = true)]
    sets: Vec<String>,
    /// Load every plugin library (*.so) in this folder (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    plugin_dirs: Vec<PathBuf>,
    /// Load this plugin library (repeatable).
    #[arg(long = "plugin", value_name = "FILE", global = true)]
    plugin_files: Vec<PathBuf>,
    /// Images processed in parallel (0: one per core).
    #[arg(
        long,
        short = 'j',
        value_name = "N",
        default_value_t = 0,
        global = true
    )]
    jobs: usize,
    /// Redo images whose outputs already exist (a rerun skips those made with the same
    /// configuration by default).
    #[arg(long, global = true)]
    force: bool,
    /// Process shard K of N (0 <= K < N): every N-th image of the sorted list, from the K-th.
    /// Overrides `run.shard`. Finish with `srhost merge OUT`.
    #[arg(long, value_name = "K/N", global = true)]
    shard: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline.
    Run { file: PathBuf },
    /// Validate a pipeline without running it.
    Check { file: PathBuf },
    /// Print the top classes of images with the pipeline's model (default: the shipped
    /// EfficientNet-Lite0 ImageNet model).
    Classify {
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Take the `[model]` table of this pipeline (and its `[[plugin]]` entries).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How many classes to print.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Print JSON: one object per image with `image` and `top` (index, label, prob, logit).
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a run's tables (metrics.csv, metrics.json, report.html, run.json) from every
    /// result.json under OUT: after shards that wrote into OUT, or to refresh a report.
    Merge { output: PathBuf },
    /// Print the per-branch summary of a finished run (its metrics.json): mean SSIM ratio,
    /// AOPC, conservation and time per branch, the best marked. Several folders: one table each.
    Compare {
        #[arg(required = true)]
        outputs: Vec<PathBuf>,
        /// Print metrics.json's summary as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Explain photos without a pipeline file: the model's top class, its relevance, the SR
    /// map, the photo's saliency and a panel per photo (the shipped EfficientNet-Lite0 and LRP
    /// epsilon-plus-flat by default). More keys with --set (e.g. relevance.x.composite=srp).
    Explain {
        /// Photos (files, folders or globs, as `run.images` takes them).
        #[arg(required = true)]
        images: Vec<String>,
        /// An ONNX classifier instead of the shipped model.
        #[arg(long, value_name = "FILE.onnx", conflicts_with_all = ["arch", "weights"])]
        model: Option<PathBuf>,
        /// A torchvision architecture (vgg16, resnet50, ...) for --weights.
        #[arg(long, value_name = "NAME", requires = "weights")]
        arch: Option<String>,
        /// Its checkpoint (.pth or .safetensors).
        #[arg(long, value_name = "FILE", requires = "arch")]
        weights: Option<PathBuf>,
        /// The relevance method: lrp, gradient, gradient-x-input, deeplift, rollout (transformers).
        #[arg(long, value_name = "NAME", default_value = "lrp")]
        method: String,
        /// The output folder.
        #[arg(long, value_name = "DIR", default_value = "out/explain")]
        out: PathBuf,
    },
    /// List every stage, built-in or loaded, with its parameters and defaults.
    Plugins {
        /// Also load the `[[plugin]]` entries of this pipeline.
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a closed stdout (`srhost classify ... | head -1`) would make
    // println! panic; with the default action the process ends quietly, as Unix tools do.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic anywhere is reported in one line and ends with exit 2 (a panic inside a stage
    // fails only its image: see srhost::process). The hook keeps the panic's text for that line.
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some(info.to_string().replace('\n', " "));
        }
    }));
    match std::panic::catch_unwind(real_main) {
        Ok(code) => code,
        Err(_) => {
            let what = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut p| p.take())
                .unwrap_or_else(|| "a panic".into());
            eprintln!("error: internal error (a bug in srhost, please report it): {what}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// The text of the last panic (its message and where), for the one line `main` prints.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn real_main() -> ExitCode {
    if let Some(v) = std::env::var_os(sr_nn::alloc::CACHE_ENV) {
        match sr_nn::alloc::parse_cache_mb(&v.to_string_lossy()) {
            Ok(bytes) => sr_nn::alloc::set_cache_limit(bytes),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(exit::USAGE);
            }
        }
    }
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<u8, Fail> {
    match (&cli.command, &cli.pipeline) {
        (Some(_), Some(_)) => Err(Fail(
            exit::USAGE,
            "give either --pipeline FILE or a subcommand, not both".into(),
        )),
        (None, None) => Err(Fail(
            exit::USAGE,
            "nothing to do: give --pipeline FILE, or a subcommand (see --help)".into(),
        )),
        (None, Some(f)) | (Some(Command::Run { file: f }), None) => run(cli, f, false),
        (Some(Command::Check { file }), None) => run(cli, file, true),
        (Some(Command::Plugins { file }), None) => list_plugins(cli, file.as_deref()),
        (Some(Command::Compare { outputs, json }), None) => compare(outputs, *json),
        (Some(Command::Merge { output }), None) => merge(output),
        (
            Some(Command::Explain {
                images,
                model,
                arch,
                weights,
                method,
                out,
            }),
            None,
        ) => explain(
            cli,
            images,
            model.as_deref(),
            arch.as_deref().zip(weights.as_deref()),
            method,
            out,
        ),
        (
            Some(Command::Classify {
                images,
                config,
                top,
                json,
            }),
            None,
        ) => classify(cli, images, config.as_deref(), *top, *json),
    }
}

fn merge(out: &Path) -> Result<u8, Fail> {
    if !out.is_dir() {
        return Err(Fail(
            exit::USAGE,
            format!("merge: {} is not a folder", out.display()),
        ));
    }
    let title = out.display().to_string();
    let m = report::rebuild(out, &title, None).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    println!(
        "merged {} finished images -> {}",
        m.images.len(),
        out.join("report.html").display()
    );
    if m.branches.len() > 1 {
        print!("{}", report::table(&m));
    }
    Ok(exit::OK)
}

fn compare(outputs: &[PathBuf], json: bool) -> Result<u8, Fail> {
    let runs: Vec<report::Metrics> = outputs
        .iter()
        .map(|o| report::read(o).map_err(|e| Fail(exit::USAGE, e.to_string())))
        .collect::<Result<_, _>>()?;
    // Two or more runs on the same images (e.g. two models): their SR maps side by side.
    let cross: Vec<(usize, Vec<(String, String, f64)>)> = (1..runs.len())
        .map(|k| {
            (
                k,
                report::cross_ssim(&outputs[0], &runs[0], &outputs[k], &runs[k]),
            )
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = runs
            .iter()
            .zip(outputs)
            .map(|(m, o)| {
                let mut m = m.clone();
                m.images.clear();
                serde_json::json!({ "output": o, "summary": m })
            })
            .collect();
        let c: Vec<serde_json::Value> = cross
            .iter()
            .map(|(k, rows)| serde_json::json!({ "a": outputs[0], "b": outputs[*k], "sr_ssim": rows }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "runs": v, "sr_map_ssim": c }))
                .unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    for (m, out) in runs.iter().zip(outputs) {
        println!("{} ({} images)", out.display(), m.images.len());
        print!("{}", report::table(m));
        println!();
    }
    for (k, rows) in &cross {
        println!(
            "SR maps of {} vs {}: SSIM per image",
            outputs[0].display(),
            outputs[*k].display()
        );
        if rows.is_empty() {
            println!("  (no image and branch with an SR map in both)");
            continue;
        }
        for (img, branch, s) in rows {
            println!("  {img:<24} {branch:<16} {s:.4}");
        }
        let mean = rows.iter().map(|r| r.2).sum::<f64>() / rows.len() as f64;
        println!("  mean SSIM {mean:.4} over {} maps", rows.len());
    }
    Ok(exit::OK)
}

/// Plugin libraries named by --plugin and found by --plugin-dir, in a stable order.
fn cli_plugin_paths(cli: &Cli) -> Result<Vec<PathBuf>, Fail> {
    let mut paths = cli.plugin_files.clone();
    for d in &cli.plugin_dirs {
        let rd = std::fs::read_dir(d).map_err(|e| {
            Fail(
                exit::USAGE,
                format!("--plugin-dir {}: cannot list it: {e}", d.display()),
            )
        })?;
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x == std::env::consts::DLL_EXTENSION)
            })
            .collect();
        found.sort();
        paths.extend(found);
    }
    Ok(paths)
}

/// Load plugins; a plugin that fails is reported (naming its file) and the others still load.
fn load_plugins(reg: &mut Registry, paths: &[PathBuf]) -> (Vec<LoadedPlugin>, usize) {
    let mut loaded = vec![];
    let mut failed = 0;
    for p in paths {
        match reg.load_plugin(p) {
            Ok(l) => loaded.push(l),
            Err(e) => {
                failed += 1;
                eprintln!("error: plugin not loaded: {e}");
            }
        }
    }
    (loaded, failed)
}

/// `srhost explain`: a pipeline written from the arguments, run as `srhost run` runs one, then
/// where each photo's files are.
fn explain(
    cli: &Cli,
    images: &[String],
    model: Option<&Path>,
    torchvision: Option<(&str, &Path)>,
    method: &str,
    out: &Path,
) -> Result<u8, Fail> {
    let s = |v: &str| toml::Value::String(v.to_string()).to_string();
    let p = |v: &Path| s(&v.display().to_string());
    let model = match (model, torchvision) {
        (Some(f), _) => format!("use = \"onnx\"\npath = {}\n", p(f)),
        (None, Some((arch, w))) => {
            format!(
                "use = \"torchvision\"\narch = {}\nweights = {}\n",
                s(arch),
                p(w)
            )
        }
        (None, None) => "use = \"torchvision\"\n".to_string(),
    };
    let branch: String = method
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let text = format!(
        "[run]\nimages = [{}]\noutput = {}\n\n[model]\n{model}\n[relevance.{branch}]\nuse = {}\n\n\
         [saliency]\nuse = \"context-aware\"\n\n[render]\nuse = [\"edge-overlay\", \"heatmap\", \"panel\"]\n",
        images.iter().map(|i| s(i)).collect::<Vec<_>>().join(", "),
        p(out),
        s(method),
    );
    let raw = spec::RawSpec::parse("(srhost explain)", &text, &cli.sets)
        .map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    let (code, pipeline) = run_spec(cli, raw, Path::new("(srhost explain)"), false)?;
    if let Some(p) = pipeline {
        for e in &p.entries {
            let dir = p.output.join(&e.name);
            if dir.join("panel.png").is_file() {
                println!(
                    "{}: {} (relevance-{branch}.npy, sr-{branch}.npy, saliency-photo.npy, ...)",
                    e.path.display(),
                    dir.join("panel.png").display()
                );
            }
        }
    }
    Ok(code)
}

fn run(cli: &Cli, file: &Path, check_only: bool) -> Result<u8, Fail> {
    let raw = spec::RawSpec::read(file, &cli.sets).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    Ok(run_spec(cli, raw, file, check_only)?.0)
}

/// Validate and run (or only check) a parsed pipeline; the exit code, and the pipeline once it
/// ran.
fn run_spec(
    cli: &Cli,
    raw: spec::RawSpec,
    file: &Path,
    check_only: bool,
) -> Result<(u8, Option<spec::Pipeline>), Fail> {
    let mut reg = srhost::registry();
    let mut paths = cli_plugin_paths(cli)?;
    paths.extend(
        raw.plugin_paths()
            .map_err(|e| Fail(exit::USAGE, e.to_string()))?,
    );
    load_plugins(&mut reg, &paths);
    let pipeline = raw
        .validate(&reg)
        .map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    if check_only {
        println!(
            "{}: ok ({} images; model: {}; relevance branches: {}; saliency: {}; renderers: {})",
            file.display(),
            pipeline.entries.len(),
            pipeline
                .model
                .as_ref()
                .map(|s| s.name.as_str())
                .unwrap_or("none"),
            if pipeline.relevance.is_empty() {
                "none".to_string()
            } else {
                pipeline
                    .relevance
                    .iter()
                    .map(|(b, s)| format!("{b} ({})", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            pipeline
                .saliency
                .as_ref()
                .map(|s| s.name.as_str())
                .unwrap_or("none"),
            if pipeline.renderers.is_empty() {
                "none".to_string()
            } else {
                pipeline
                    .renderers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        return Ok((exit::OK, None));
    }
    let mut pipeline = pipeline;
    if let Some(k) = &cli.shard {
        pipeline.shard = Some(
            k.parse::<dataset::Shard>()
                .map_err(|m| Fail(exit::USAGE, format!("--shard {m}")))?,
        );
    }
    let srhost::Executed {
        summary,
        fingerprint,
    } = srhost::execute(
        &pipeline,
        &reg,
        runner::RunOptions {
            jobs: cli.jobs,
            force: cli.force,
        },
    )?;
    let shard = match pipeline.shard {
        Some(s) => format!(
            " of {} (shard {}/{})",
            pipeline.entries.len(),
            s.index,
            s.count
        ),
        None => String::new(),
    };
    println!(
        "done {}, skipped {}, failed {} ({} images{shard}) -> {}",
        summary.done,
        summary.skipped,
        summary.failed.len(),
        summary.images,
        pipeline.output.display()
    );
    if !summary.redone.is_empty() {
        let old: std::collections::BTreeSet<&str> =
            summary.redone.iter().map(|(_, f)| f.as_str()).collect();
        println!(
            "redid {} finished images: their result.json came from another configuration, model file or srhost (fingerprint {} -> {fingerprint})",
            summary.redone.len(),
            old.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if !summary.repaired.is_empty() {
        println!(
            "redid {} images whose files were missing or changed since they were finished",
            summary.repaired.len()
        );
    }
    if summary.busy > 0 {
        println!(
            "left {} images undone: other processes in {} still hold them after {} s of waiting (two leases); rerun to check them: {}",
            summary.busy,
            pipeline.output.display(),
            2 * srhost::records::lease().as_secs(),
            summary.busy_folders.join(", ")
        );
    }
    // Several branches: the A/B summary (also `srhost compare OUT`).
    if pipeline.relevance.len() > 1 {
        if let Ok(m) = report::read(&pipeline.output) {
            print!("{}", report::table(&m));
        }
    }
    println!("report: {}", pipeline.output.join("report.html").display());
    // Every image left undone (failed, or held by another process) counts.
    let code = if summary.undone() == 0 {
        exit::OK
    } else {
        exit::FAILED
    };
    Ok((code, Some(pipeline)))
}

fn list_plugins(cli: &Cli, file: Option<&Path>) -> Result<u8, Fail> {
    let mut reg = srhost::registry();
    let mut paths = cli_plugin_paths(cli)?;
    if let Some(f) = file {
        let raw =
            spec::RawSpec::read(f, &cli.sets).map_err(|e| Fail(exit::USAGE, e.to_string()))?;
        paths.extend(
            raw.plugin_paths()
                .map_err(|e| Fail(exit::USAGE, e.to_string()))?,
        );
    }
    let (_, failed) = load_plugins(&mut reg, &paths);
    let mut any = false;
    for e in reg.entries() {
        any = true;
        println!(
            "{:<10} {:<24} {:<8} {}",
            kind_name(e.info.kind),
            e.info.name,
            e.info.version,
            e.source
        );
        if !e.info.description.is_empty() {
            println!("    {}", e.info.description);
        }
        for p in &e.info.params {
            println!(
                "    {} = {:<12} # {}",
                p.key,
                p.default_toml.as_deref().unwrap_or("(no default)"),
                p.doc
            );
        }
    }
    if !any {
        println!("no stages are registered (load plugins with --plugin FILE or --plugin-dir DIR)");
    }
    Ok(if failed > 0 { 2 } else { 0 })
}

fn classify(
    cli: &Cli,
    images: &[PathBuf],
    config: Option<&Path>,
    top: usize,
    json: bool,
) -> Result<u8, Fail> {
    let raw = match config {
        Some(f) => spec::RawSpec::read(f, &cli.sets),
        None => spec::RawSpec::parse("(no config)", "", &cli.sets),
    }
    .map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    let mut reg = srhost::registry();
    let mut paths = cli_plugin_paths(cli)?;
    paths.extend(
        raw.plugin_paths()
            .map_err(|e| Fail(exit::USAGE, e.to_string()))?,
    );
    load_plugins(&mut reg, &paths);
    let model_spec = raw
        .model_spec(&reg)
        .map_err(|e| Fail(exit::USAGE, e.to_string()))?;
    let model = reg
        .create_model(&model_spec.name, &model_spec.params_toml)
        .map_err(|e| {
            Fail(
                exit::USAGE,
                e.context(format!("[{}]", model_spec.table)).to_string(),
            )
        })?;
    let info = model.info();
    let mut failed = 0;
    let mut out = vec![];
    for path in images {
        let result = sr_core::preprocess::load_photo(path)
            .and_then(|rgb| sr_core::preprocess::preprocess(&rgb, &info))
            .and_then(|(x, _)| model.forward(&x))
            .and_then(|y| sr_core::contract::logits(&y, 1, "the model").map(|()| y));
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
                continue;
            }
        };
        let l: Vec<f64> = logits.data().iter().map(|&v| v as f64).collect();
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let best: Vec<serde_json::Value> = idx
            .iter()
            .take(top)
            .map(|&i| {
                serde_json::json!({
                    "index": i,
                    "label": info.labels.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
                    "prob": (l[i] - m).exp() / z,
                    "logit": l[i],
                })
            })
            .collect();
        if !json {
            println!("{}", path.display());
            for (rank, b) in best.iter().enumerate() {
                println!(
                    "  {}. {:<28} {:.4}  (class {}, logit {:.3})",
                    rank + 1,
                    b["label"].as_str().unwrap_or(""),
                    b["prob"].as_f64().unwrap_or(0.0),
                    b["index"],
                    b["logit"].as_f64().unwrap_or(0.0)
                );
            }
        }
        out.push(serde_json::json!({ "image": path.display().to_string(), "model": info.name, "top": best }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
