//! A real Slurm cluster (issue 31): scripts/slurm-array.sh as a job array of four tasks on a
//! one-node cluster that scripts/slurm-cluster.sh starts (the test command starts it and sets
//! `SLURM_CONF`), one task cancelled while it runs and requeued, then `srhost merge`: the
//! result equals one unsharded run (metrics rows without the timing columns, the same files,
//! every `.npy` byte for byte).
//!
//! Without `SLURM_CONF` the test says so and passes, unless `SRHOST_REQUIRE_SLURM=1` (the test
//! command sets it): then a missing cluster fails it.

use srhost_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run a Slurm command; its stdout, trimmed. Fails the test with its stderr.
fn slurm(cmd: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait until `done()` holds, at most `secs`.
fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_slurm_job_array_with_a_cancelled_and_requeued_task_merges_to_one_clean_run() {
    if std::env::var_os("SLURM_CONF").is_none() {
        assert!(
            std::env::var("SRHOST_REQUIRE_SLURM").as_deref() != Ok("1"),
            "SRHOST_REQUIRE_SLURM=1 but no SLURM_CONF: scripts/slurm-cluster.sh did not start a cluster"
        );
        println!("skipped: no Slurm cluster (SLURM_CONF unset; scripts/test.sh starts one)");
        return;
    }
    let dir = scratch("slurm");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for p in [
        "coffee.png",
        "chelsea.png",
        "astronaut.png",
        "rocket.jpg",
        "grace_hopper.jpg",
    ] {
        std::fs::copy(repo().join("assets/images").join(p), photos.join(p)).unwrap();
    }
    let pipeline = |out: &Path| {
        format!(
            "[run]\nimages = [{}]\noutput = {}\n\n[model]\nuse = \"torchvision\"\n\n\
             [relevance.grad]\nuse = \"gradient\"\n\n[saliency]\nuse = \"context-aware\"\nmax_dim = 160\n",
            lit(&photos),
            lit(out)
        )
    };
    let (sharded, single) = (dir.join("out-slurm"), dir.join("out-single"));
    let cfg = write(&dir, "slurm.toml", &pipeline(&sharded));
    let bin = srhost_bin();
    let script = repo().join("scripts/slurm-array.sh");
    // The script asks for 4 CPUs a task; the test node has 2, and each task gets 1.
    let job = slurm(
        "sbatch",
        &[
            "--parsable",
            "--array=0-3",
            "--cpus-per-task=1",
            "--requeue",
            // Both runs of the requeued task in its log.
            "--open-mode=append",
            &format!("--export=ALL,PIPELINE={cfg},SRHOST={}", bin.display()),
            "-o",
            &dir.join("task-%a.log").display().to_string(),
            script.to_str().unwrap(),
        ],
        &dir,
    );
    let task = format!("{job}_1");
    let state = |t: &str| slurm("squeue", &["-h", "-j", t, "-o", "%T"], &dir);
    // Task 1 (shard 1/4: chelsea, the second of the sorted photos) cancelled while it works on
    // its image, as soon as it has claimed it, then requeued.
    let claim = sharded.join("chelsea").join(".srhost.lock");
    wait_for("task 1 to claim its image", 120, || claim.exists());
    slurm("scancel", &[&task], &dir);
    wait_for("task 1 to end", 60, || state(&task).is_empty());
    slurm("scontrol", &["requeue", &task], &dir);
    // A requeued job waits about two minutes before it may start again; not this one.
    slurm(
        "scontrol",
        &["update", &format!("JobId={task}"), "StartTime=now"],
        &dir,
    );
    wait_for("the array to finish", 600, || {
        slurm("squeue", &["-h", "-j", &job, "-o", "%i"], &dir).is_empty()
    });
    let shown = slurm("scontrol", &["show", "job", &task], &dir);
    assert!(
        shown.contains("Restarts=1") && shown.contains("JobState=COMPLETED"),
        "task 1 was not requeued and completed: {shown}"
    );
    for k in 0..4 {
        let log = std::fs::read_to_string(dir.join(format!("task-{k}.log"))).unwrap();
        assert!(!log.contains("panicked"), "task {k}: {log}");
        // Task 1 was cancelled while it ran, and its second run finished its shard.
        assert_eq!(log.contains("CANCELLED"), k == 1, "task {k}: {log}");
        assert!(log.contains("failed 0"), "task {k}: {log}");
    }
    let m = srhost(&dir, &["merge", sharded.to_str().unwrap()]);
    assert_eq!(m.code, 0, "{m:?}");
    let one = srhost(
        &dir,
        &[
            "--pipeline",
            &write(&dir, "single.toml", &pipeline(&single)),
        ],
    );
    assert_eq!(one.code, 0, "{one:?}");
    assert_same_run(&sharded, &single);
}
