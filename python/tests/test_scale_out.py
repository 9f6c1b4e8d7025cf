"""The Kubernetes Indexed Job of docs/scale-out.md, as a user copies it: validated against the
Kubernetes API schema by `kubernetes-validate` (PyPI; scripts/test.sh installs it), strictly
(no unknown fields), and its shard setting understood by srhost itself (`run.shard` expands
`${JOB_COMPLETION_INDEX}`, which Kubernetes sets in every pod of an Indexed Job)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def manifests():
    text = (REPO / "docs/scale-out.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def validator():
    exe = Path(sys.executable).parent / "kubernetes-validate"
    found = str(exe) if exe.exists() else shutil.which("kubernetes-validate")
    if not found:
        if os.environ.get("SRHOST_REQUIRE") == "1":
            pytest.fail("kubernetes-validate is not installed (scripts/test.sh installs it)")
        pytest.skip("kubernetes-validate is not installed")
    return found


def test_the_indexed_job_manifest_is_valid_kubernetes(tmp_path):
    docs = manifests()
    assert len(docs) == 1, "docs/scale-out.md should hold the one Job manifest"
    f = tmp_path / "job.yaml"
    f.write_text(docs[0])
    r = subprocess.run([validator(), "--strict", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed for resource job/srhost-val" in r.stdout + r.stderr
    assert "completionMode: Indexed" in docs[0]


def test_the_manifests_shard_setting_is_what_srhost_expands(tmp_path):
    srhost = os.environ.get("SRHOST_BIN") or str(REPO / "target/debug/srhost")
    if not Path(srhost).is_file():
        if os.environ.get("SRHOST_REQUIRE") == "1":
            pytest.fail(f"SRHOST_BIN: {srhost} does not exist")
        pytest.skip("srhost not built")
    shard = re.search(r'"run\.shard=([^"]+)"', manifests()[0]).group(1)
    assert shard == "${JOB_COMPLETION_INDEX}/100", shard
    args = [srhost, "check", str(REPO / "configs/sr.toml"), "--set", f"run.shard={shard}"]
    env = dict(os.environ, JOB_COMPLETION_INDEX="7")
    r = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    env.pop("JOB_COMPLETION_INDEX")
    r = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 2 and "JOB_COMPLETION_INDEX" in r.stderr, r.stderr
