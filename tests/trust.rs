//! Trust at scale (issue 28): nothing written or deleted outside `run.output`, no image lost on
//! resume, no hang or abort on files that are not what they claim, and the command line itself
//! never panics. One test per family of the hostile cases.

use srhost_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A small pipeline over `images` into `out`: the shipped model, the gradient, Itti-Koch at its
/// smallest size.
fn spec(dir: &Path, images: &str, out: &Path) -> String {
    write(
        dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{images}]\noutput = {}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\nmax_dim = 128\n",
            lit(out)
        ),
    )
}

fn photos(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let p = dir.join("photos");
    std::fs::create_dir_all(&p).unwrap();
    for n in names {
        std::fs::copy(photo(n), p.join(n)).unwrap();
    }
    p
}

fn result(out: &Path, folder: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(folder).join("result.json")).unwrap()).unwrap()
}

#[cfg(unix)]
#[test]
fn a_symlinked_image_folder_inside_the_output_is_never_written_or_cleaned() {
    let dir = scratch("trust-symlink");
    let ph = photos(&dir, &["coffee.png", "chelsea.png"]);
    let out = dir.join("out");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A planted result.json there lists a file outside srhost's making, with a stale temp.
    std::fs::write(elsewhere.join("precious.txt"), "keep me").unwrap();
    std::fs::write(
        elsewhere.join("result.json"),
        r#"{"image": "x", "fingerprint": "old", "label": null, "class_index": null,
            "branches": [], "outputs": ["precious.txt"], "seconds": {}}"#,
    )
    .unwrap();
    std::fs::write(elsewhere.join(".x.tmp-host-1-0"), "temp").unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("coffee")).unwrap();
    let before: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let r = srhost(&dir, &["--pipeline", &spec(&dir, &lit(&ph), &out)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("done 1, skipped 0, failed 1"), "{r:?}");
    assert!(
        r.stderr.contains(
            "a symbolic link inside the output folder; srhost does not follow links there"
        ),
        "{r:?}"
    );
    let after: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "{after:?}");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(result(&out, "chelsea")["label"].is_string());
}

#[test]
fn an_image_whose_files_vanished_is_redone_not_skipped() {
    let dir = scratch("trust-vanished");
    let ph = photos(&dir, &["coffee.png", "chelsea.png"]);
    let out = dir.join("out");
    let cfg = spec(&dir, &lit(&ph), &out);
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    let listed = result(&out, "coffee")["outputs"].as_array().unwrap().len();
    let sizes = result(&out, "coffee")["sizes"].as_array().unwrap().len();
    assert_eq!(listed, sizes, "every output has its size recorded");
    // One file removed, one truncated: both images are redone, not skipped.
    std::fs::remove_file(out.join("coffee/relevance-grad.npy")).unwrap();
    std::fs::write(out.join("chelsea/sr-grad.npy"), b"").unwrap();
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    assert!(
        r.stdout
            .contains("redid 2 images whose files were missing or changed"),
        "{r:?}"
    );
    assert!(out.join("coffee/relevance-grad.npy").is_file());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(run.to_string().contains("relevance-grad.npy"), "{run}");
    // And now it is finished: a third run skips both.
    let r = srhost(&dir, &["--pipeline", &cfg]);
    assert!(r.stdout.contains("done 0, skipped 2, failed 0"), "{r:?}");
}

/// Set a file's modification time `secs` seconds into the past.
fn age(f: &Path, secs: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Two photos to run into `out`, and coffee's folder claimed by process 4242 of `node17`: the
/// scratch folder, the output, the pipeline and the claim file.
fn claimed_by_another_host(
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    String,
    std::path::PathBuf,
) {
    let dir = scratch(name);
    let ph = photos(&dir, &["coffee.png", "chelsea.png"]);
    let out = dir.join("out");
    let cfg = spec(&dir, &lit(&ph), &out);
    std::fs::create_dir_all(out.join("coffee")).unwrap();
    let lock = out.join("coffee/.srhost.lock");
    std::fs::write(&lock, "node17 4242 77").unwrap();
    (dir, out, cfg, lock)
}

#[test]
fn a_claim_left_on_another_host_is_taken_over_after_its_lease() {
    let (dir, out, cfg, lock) = claimed_by_another_host("trust-lease");
    // A preempted array task on node17: its claim was last renewed 30 s ago; the lease is 20 s.
    age(&lock, 30);
    let mut cmd = Command::new(srhost_bin());
    cmd.current_dir(&dir)
        .args(["--pipeline", &cfg])
        .env("SRHOST_LOCK_LEASE_S", "20");
    let r = run_measured(cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("done 2, skipped 0, failed 0"), "{r:?}");
    assert!(result(&out, "coffee")["label"].is_string());
    assert!(!lock.exists(), "the claim is released after the image");
}

#[test]
fn a_claim_that_is_renewed_is_waited_for_and_counted_when_it_never_ends() {
    let (dir, out, cfg, lock) = claimed_by_another_host("trust-held");
    // A holder that keeps renewing its claim (a live process on another host): srhost waits
    // two leases (2 x 1 s), then gives up and says so; the image counts as undone (exit 1).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                age(&lock, 0);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let mut cmd = Command::new(srhost_bin());
        cmd.current_dir(&dir)
            .args(["--pipeline", &cfg])
            .env("SRHOST_LOCK_LEASE_S", "1");
        let r = run_measured(cmd);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("left 1 images undone"), "{r:?}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let runs = run.to_string();
    assert!(
        runs.contains("\"undone\":1") && runs.contains("\"left_to_others\":[\"coffee\"]"),
        "{run}"
    );
}

#[test]
fn an_output_folder_inside_the_photo_folder_is_not_collected_as_photos() {
    let dir = scratch("trust-nested");
    let ph = photos(&dir, &["coffee.png", "chelsea.png"]);
    let out = ph.join("out");
    let cfg = spec(&dir, &lit(&ph), &out);
    for _ in 0..2 {
        let r = srhost(&dir, &["--pipeline", &cfg]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("(2 images)"), "{r:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_double_star_glob_through_a_symlink_loop_ends() {
    let dir = scratch("trust-loop");
    let ph = photos(&dir, &["coffee.png"]);
    std::os::unix::fs::symlink(&ph, ph.join("loop")).unwrap();
    let out = dir.join("out");
    let glob = format!("{}/**/*.png", ph.display());
    let r = srhost(&dir, &["check", &spec(&dir, &format!("{glob:?}"), &out)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ok (1 images"), "{r:?}");
}

/// An unreadable subfolder (a disk's `lost+found`) is skipped with a warning naming it, and the
/// photos beside it are still run. It refused the whole run, naming the wrong folder.
///
/// Permissions do not stop root, which CI runs as: there `srhost` runs as `nobody` through
/// `setpriv` (util-linux), from a copy of the binary outside root's home.
#[cfg(unix)]
#[test]
fn an_unreadable_subfolder_is_skipped_with_a_warning_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("trust-lost-found");
    let ph = photos(&dir, &["coffee.png"]);
    let sub = ph.join("birds");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(photo("chelsea.png"), sub.join("chelsea.png")).unwrap();
    let lost = ph.join("lost+found");
    std::fs::create_dir(&lost).unwrap();
    std::fs::copy(photo("astronaut.png"), lost.join("astronaut.png")).unwrap();
    std::fs::set_permissions(&lost, std::fs::Permissions::from_mode(0o000)).unwrap();
    let cfg = write(
        &dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\nrecursive = true\noutput = {}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\nmax_dim = 128\n",
            lit(&ph),
            lit(&dir.join("out"))
        ),
    );
    let root = unsafe { geteuid() } == 0;
    let mut cmd = if root {
        let bin = dir.join("srhost");
        std::fs::copy(srhost_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(srhost_bin())
    };
    cmd.current_dir(&dir)
        .args(["check", &cfg])
        .env_remove("RUST_BACKTRACE");
    // Scratch folders are 0755 and files 0644 under /tmp: `nobody` reads all but `lost+found`.
    let r = run_measured(cmd);
    std::fs::set_permissions(&lost, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ok (2 images"), "{r:?}");
    assert!(
        r.stderr
            .contains("warning: `run.images`: skipped the folder")
            && r.stderr
                .contains("lost+found (cannot read it: Permission denied"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("birds"), "{r:?}");
}

#[cfg(unix)]
extern "C" {
    fn geteuid() -> u32;
}

#[cfg(unix)]
#[test]
fn fifos_devices_and_oversized_files_are_refused_without_hanging() {
    let dir = scratch("trust-fifo");
    let fifo = dir.join("photo.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let r = srhost(&dir, &["classify", fifo.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("a photo must be a regular file, this is a named pipe (FIFO)"),
        "{r:?}"
    );
    let r = srhost(&dir, &["check", "/dev/zero"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("a pipeline file must be a regular file, this is a device"),
        "{r:?}"
    );
    // A 2 MiB pipeline file: more than a pipeline may be.
    let big = write(&dir, "big.toml", &"# padding\n".repeat(210_000));
    let r = srhost(&dir, &["check", &big]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("is more than a pipeline file may be (1048576 bytes)"),
        "{r:?}"
    );
}

#[test]
fn jobs_are_capped() {
    let dir = scratch("trust-jobs");
    let ph = photos(&dir, &["coffee.png"]);
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &spec(&dir, &lit(&ph), &dir.join("out")),
            "--jobs",
            "100000",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("--jobs 100000: at most 256 worker threads"),
        "{r:?}"
    );
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    // `srhost plugins | true`: the reader is gone before srhost writes.
    let mut child = Command::new(srhost_bin())
        .arg("plugins")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    // Killed by SIGPIPE, as `cat` or `ls` would be (or done before it noticed).
    assert!(
        out.status.signal() == Some(13) || out.status.success(),
        "{:?} {err}",
        out.status
    );
}

#[test]
fn a_merge_of_two_configurations_is_refused_and_a_run_keeps_its_own_tables() {
    let dir = scratch("trust-mixed");
    let ph = photos(&dir, &["coffee.png", "chelsea.png"]);
    let out = dir.join("out");
    let cfg = spec(&dir, &lit(&ph), &out);
    assert_eq!(srhost(&dir, &["--pipeline", &cfg]).code, 0);
    // Another configuration, on one of the photos only, into the same folder.
    let r = srhost(
        &dir,
        &[
            "--pipeline",
            &cfg,
            "--set",
            &format!("run.images=[{}]", lit(&ph.join("coffee.png"))),
            "--set",
            "saliency.max_dim=160",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("1 finished images in") && r.stderr.contains("left out of its tables"),
        "{r:?}"
    );
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "only the second run's image: {csv}");
    let r = srhost(&dir, &["merge", out.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("its images were made by 2 configurations"),
        "{r:?}"
    );
}

/// Two shards on one output folder with the faults of a cluster: shard 0 killed mid-run on
/// `nodeA` (its claim left behind) and requeued on `nodeB`, which takes the claim over after
/// the lease; one finished image's folder removed afterwards and redone by a rerun. The merge
/// equals one clean run: the same metrics rows (without timings), files and `.npy` bytes.
#[cfg(unix)]
#[test]
fn shards_with_a_kill_a_requeue_elsewhere_and_a_removed_folder_merge_to_one_clean_run() {
    let dir = scratch("trust-faults");
    let ph = dir.join("photos");
    std::fs::create_dir_all(&ph).unwrap();
    let samples = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg"];
    for i in 0..8 {
        let s = samples[i % 4];
        let ext = s.rsplit_once('.').unwrap().1;
        std::fs::copy(photo(s), ph.join(format!("img{i}.{ext}"))).unwrap();
    }
    let clean = dir.join("clean");
    let r = srhost(
        &dir,
        &["--pipeline", &spec(&dir, &lit(&ph), &clean), "--jobs", "1"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let out = dir.join("out");
    let cfg = spec(&dir, &lit(&ph), &out);
    let shard = |k: u32, host: &str| {
        let mut c = Command::new(srhost_bin());
        c.current_dir(&dir)
            .args([
                "--pipeline",
                &cfg,
                "--jobs",
                "1",
                "--shard",
                &format!("{k}/2"),
            ])
            .env("SRHOST_HOST", host)
            .env("SRHOST_LOCK_LEASE_S", "2");
        c
    };
    // Shard 0 on nodeA, killed once its first image is finished (it has claimed the next).
    let mut a = shard(0, "nodeA")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let finished = |out: &Path| {
        std::fs::read_dir(out)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("result.json").is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while finished(&out) == 0 && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let locks = files_in(&out)
        .into_iter()
        .filter(|f| f.ends_with(".srhost.lock"))
        .count();
    // Shard 1 on nodeB meanwhile, and shard 0 requeued on nodeB: it waits out nodeA's claim.
    let r1 = run_measured(shard(1, "nodeB"));
    assert_eq!(r1.code, 0, "{r1:?}");
    let r0 = run_measured(shard(0, "nodeB"));
    println!("claims the kill left: {locks}");
    assert_eq!(r0.code, 0, "{r0:?}");
    assert!(r0.stdout.contains("failed 0"), "{r0:?}");
    // A finished image's folder removed (a cleanup gone wrong): the rerun of its shard redoes it.
    let gone = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("result.json").is_file())
        .unwrap()
        .path();
    std::fs::remove_dir_all(&gone).unwrap();
    for k in 0..2 {
        let r = run_measured(shard(k, "nodeB"));
        assert_eq!(r.code, 0, "{r:?}");
    }
    let m = srhost(&dir, &["merge", out.to_str().unwrap()]);
    assert_eq!(m.code, 0, "{m:?}");
    assert!(m.stdout.contains("merged 8 finished images"), "{m:?}");
    let left: Vec<String> = files_in(&out)
        .into_iter()
        .filter(|f| f.contains(".tmp-") || f.ends_with(".srhost.lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_same_run(&clean, &out);
}

/// A 49-megapixel photo under the pixel limit, with a model, a relevance branch, saliency and
/// every renderer: one job stays under 1 GiB (it took 1.08 GB: the full photo as floats was made
/// for the renderers, which draw the model's input). Renderers get at most 4 megapixels then.
#[test]
fn a_49_megapixel_photo_stays_under_a_gibibyte() {
    let dir = scratch("trust-50mp");
    let (w, h) = (7000u32, 7000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let f = dir.join("big.png");
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        std::io::BufWriter::new(std::fs::File::create(&f).unwrap()),
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    image::ImageEncoder::write_image(enc, &img, w, h, image::ExtendedColorType::Rgb8).unwrap();
    drop(img);
    let out = dir.join("out");
    let cfg = write(
        &dir,
        "p.toml",
        &format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"itti\"\nmax_dim = 128\n\n\
             [render]\nuse = [\"edge-overlay\", \"heatmap\", \"panel\"]\n",
            lit(&f),
            lit(&out)
        ),
    );
    let r = srhost(&dir, &["--pipeline", &cfg, "--jobs", "1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.peak_mib < 1024.0, "{:.0} MiB", r.peak_mib);
    assert!(out.join("big/panel.png").is_file());
}
