"""The Python package against the srhost command line, the Zennit golden maps, and itself.

Reference values: the CLI's own outputs (a separate binary, run here), and Zennit's
EpsilonPlusFlat maps committed under tests/fixtures/golden (made by PyTorch/Zennit, see its
README). Run from the repository root: `python -m pytest python/tests`. scripts/test.sh sets
SRHOST_BIN (the srhost binary) and SRHOST_PLUGIN_SO (the example plugin) and SRHOST_REQUIRE=1,
under which a missing binary fails instead of skipping.
"""

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import srhost

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ["coffee", "chelsea"]
# Python and the CLI run the same Rust code on the same inputs: they must agree to float32
# round-off at most (the bound).
CLI_TOL = 1e-6
# Zennit's maps and srhost's LRP differ by float32 round-off (max abs error about 1e-6 of the
# map's range, tests/relevance.rs); through the context-aware search that moves a few patch
# distances across ties, so SR maps of the two are compared by SSIM.
ZENNIT_SR_MIN_SSIM = 0.99

SALIENCY = dict(variant="reference")
LRP = dict(composite="epsilon-plus-flat", add="copy", epsilon=1e-6)


def _tool(env, default):
    p = os.environ.get(env) or str(REPO / default)
    if not Path(p).is_file():
        if os.environ.get("SRHOST_REQUIRE") == "1":
            pytest.fail(f"{env}: {p} does not exist")
        pytest.skip(f"{env} not set and {p} not built (run scripts/test.sh)")
    return p


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The CLI's maps for the sample photos, from a pipeline with the keywords used below."""
    srhost_bin = _tool("SRHOST_BIN", "target/debug/srhost")
    d = tmp_path_factory.mktemp("cli")
    images = ", ".join(f'"{REPO}/assets/images/{p}.png"' for p in PHOTOS)
    # Zennit's maps, for relevance.file.
    (d / "maps").mkdir()
    for p in PHOTOS:
        (d / "maps" / f"{p}.npy").write_bytes(zennit_path(p).read_bytes())
    toml = f"""
[run]
images = [{images}]
output = "{d}/out"

[model]
use = "torchvision"

[relevance.lrp]
use = "lrp"
composite = "epsilon-plus-flat"
add = "copy"
epsilon = 1e-6

[relevance.zennit]
use = "file"
folder = "{d}/maps"

[saliency]
use = "context-aware"
variant = "reference"
relevance_input = "abs-rgb"

[metrics]
aopc = true
aopc_steps = 10
aopc_patch = 16
seed = 3
"""
    (d / "p.toml").write_text(toml)
    r = subprocess.run([srhost_bin, "--pipeline", str(d / "p.toml"), "-j", "1"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return d / "p.toml", d / "out"


def zennit_path(name):
    return REPO / f"tests/fixtures/golden/efficientnet_lite0/{name}/epsilon_plus_flat.npy"


@pytest.fixture(scope="module")
def model():
    return srhost.Model.torchvision()


def photo(name):
    return str(REPO / "assets/images" / f"{name}.png")


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.mark.parametrize("name", PHOTOS)
def test_saliency_relevance_and_sr_maps_equal_the_cli(cli_run, model, name):
    _, out = cli_run
    crop = model.crop(photo(name))
    sal = srhost.saliency(crop, **SALIENCY)
    assert max_abs(sal, np.load(out / name / "saliency-photo.npy")) <= CLI_TOL
    rel = model.explain(photo(name), method="lrp", **LRP)
    assert rel.shape == (1, 3, 224, 224) and rel.dtype == np.float32
    assert max_abs(rel[0], np.load(out / name / "relevance-lrp.npy")) <= CLI_TOL
    sr = srhost.sr_map(rel[0], **SALIENCY)
    assert max_abs(sr, np.load(out / name / "sr-lrp.npy")) <= CLI_TOL


@pytest.mark.parametrize("name", PHOTOS)
def test_zennit_maps_through_sr_map_equal_the_cli_sr_maps(cli_run, name):
    _, out = cli_run
    zennit = np.load(zennit_path(name))
    assert zennit.shape == (1, 3, 224, 224)
    sr = srhost.sr_map(zennit[0], **SALIENCY)
    # The CLI's SR map of the same relevance (relevance.file reads the same .npy).
    assert max_abs(sr, np.load(out / name / "sr-zennit.npy")) <= CLI_TOL
    # And the SR map of srhost's own LRP with Zennit's settings.
    s = srhost.ssim(sr, np.load(out / name / "sr-lrp.npy"))
    assert s >= ZENNIT_SR_MIN_SSIM, s
    # H x W maps (a channel sum, as Captum users often keep) work too.
    assert srhost.sr_map(zennit[0].sum(0), relevance_input="abs-sum", **SALIENCY).shape == (224, 224)


def test_run_gives_the_cli_outputs(cli_run, tmp_path):
    toml, out = cli_run
    r = srhost.run(str(toml), set={"run.output": str(tmp_path / "py")}, jobs=1)
    assert r["done"] == len(PHOTOS) and r["failed"] == []
    assert {Path(i["image"]).stem for i in r["images"]} == set(PHOTOS)
    for name in PHOTOS:
        for f in ["saliency-photo.npy", "relevance-lrp.npy", "sr-lrp.npy", "sr-zennit.npy"]:
            a, b = np.load(out / name / f), np.load(tmp_path / "py" / name / f)
            assert max_abs(a, b) <= CLI_TOL, (name, f)
    # A rerun resumes: nothing is redone.
    r = srhost.run(str(toml), set={"run.output": str(tmp_path / "py")})
    assert r["done"] == 0 and r["skipped"] == len(PHOTOS)


def test_predict_matches_the_golden_logits(model):
    want = np.load(REPO / "tests/fixtures/golden/efficientnet_lite0/coffee/logits.npy")
    got = model.predict(photo("coffee"))
    assert got.shape == (1, 1000)
    assert max_abs(got, want.reshape(1, -1)) <= 1e-4 * np.abs(want).max()
    # A batch equals its images one by one; a pre-normalised batch is taken as it is.
    both = model.predict([photo("coffee"), photo("chelsea")])
    assert max_abs(both[1:], model.predict(photo("chelsea"))) <= 1e-5
    x = np.load(REPO / "tests/fixtures/golden/inputs/coffee/input_lite.npy")
    assert max_abs(model.predict(x), want.reshape(1, -1)) <= 1e-4 * np.abs(want).max()


def test_ssim_known_values():
    a = np.random.default_rng(0).random((32, 32))
    assert srhost.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # Two constant maps: SSIM's luminance term, (2*mu_a*mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    # with C1 = (0.01)^2 (data range 1); the structure terms are 1.
    # (Maps are taken as float32, so the means are float32(0.2) and float32(0.6).)
    c1 = 0.01 ** 2
    a, b = float(np.float32(0.2)), float(np.float32(0.6))
    want = (2 * a * b + c1) / (a ** 2 + b ** 2 + c1)
    got = srhost.ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6))
    assert got == pytest.approx(want, rel=1e-9)


def test_aopc_equals_the_cli(cli_run, model):
    _, out = cli_run
    rel = np.load(out / "coffee" / "relevance-lrp.npy")
    r = srhost.aopc(model, photo("coffee"), rel, aopc_steps=10, aopc_patch=16, seed=3)
    assert set(r) == {"target", "aopc", "curve", "aopc_random", "curve_random"}
    assert len(r["curve"]) == 11 and r["target"] == int(model.predict(photo("coffee")).argmax())
    cli = json.loads((out / "coffee" / "result.json").read_text())
    lrp = next(b for b in cli["branches"] if b["branch"] == "lrp")
    assert r["aopc"] == pytest.approx(lrp["aopc"], abs=CLI_TOL)
    assert r["aopc_random"] == pytest.approx(cli["aopc_random"], abs=CLI_TOL)


def test_bad_input_raises_with_the_cli_messages(model):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="`blurr`: unknown key for saliency stage `context-aware`"):
        srhost.saliency(img, blurr=3)
    with pytest.raises(ValueError, match=r"`k`: expected an integer"):
        srhost.saliency(img, k="many")
    with pytest.raises(ValueError, match="unknown saliency stage `nope`"):
        srhost.saliency(img, method="nope")
    with pytest.raises(ValueError, match="not finite"):
        srhost.saliency(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        srhost.saliency(np.full((8, 8, 3), 2.0))
    with pytest.raises(TypeError, match="dtype int16"):
        srhost.saliency(np.zeros((8, 8, 3), np.int16))
    with pytest.raises(TypeError, match="expected a numpy array"):
        srhost.saliency([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="expected an H x W x 3"):
        srhost.saliency(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="expected a C x H x W"):
        srhost.sr_map(np.zeros((1, 1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="`relevance_input`"):
        srhost.sr_map(np.zeros((8, 8), np.float32), relevance_input="abs")
    with pytest.raises(ValueError, match="two H x W arrays of one shape"):
        srhost.ssim(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(OSError, match="no-such.png"):
        model.predict("no-such.png")
    with pytest.raises(ValueError, match="2 targets for 1 images"):
        model.explain(photo("coffee"), target=[1, 2])
    with pytest.raises(ValueError, match="unknown key for relevance stage `lrp`"):
        model.explain(photo("coffee"), composit="srp")
    with pytest.raises(ValueError, match="`aopc_patch`: expected an integer from 1 to 1024"):
        srhost.aopc(model, photo("coffee"), np.ones((224, 224), np.float32), aopc_patch=0)
    with pytest.raises(OSError, match="missing.onnx: No such file"):
        srhost.Model.onnx("missing.onnx")


def test_a_bound_method_gives_the_maps_of_a_fresh_model(model):
    # The model keeps each method bound per parameters: repeated calls, calls with other
    # parameters in between, and a freshly loaded model all give the same bits.
    first = model.explain(photo("coffee"), **LRP)
    other = model.explain(photo("coffee"), composite="srp")
    again = model.explain(photo("coffee"), **LRP)
    fresh = srhost.Model.torchvision().explain(photo("coffee"), **LRP)
    assert np.array_equal(first, again) and np.array_equal(first, fresh)
    assert not np.array_equal(first, other)


def test_relevance_file_reads_the_map_of_the_photo_given_by_path(model, tmp_path):
    # relevance.file is an ordinary stage: given photos by path, it finds their maps.
    for name in PHOTOS:
        (tmp_path / f"{name}.npy").write_bytes(zennit_path(name).read_bytes())
    got = model.explain([photo(n) for n in PHOTOS], method="file", folder=str(tmp_path))
    want = np.concatenate([np.load(zennit_path(n)) for n in PHOTOS]).astype(np.float32)
    assert np.array_equal(got, want)
    # A bare array has no path to find a map by.
    crop = model.crop(photo("coffee"))
    with pytest.raises(ValueError, match="found by the image's path"):
        model.explain(crop, method="file", folder=str(tmp_path))


def test_a_zero_stride_view_of_a_huge_shape_is_refused_before_it_is_copied(model):
    # np.broadcast_to makes a 1-value array look like 100,000 images: it aborted the
    # interpreter in predict, and was unbounded in sr_map.
    huge = np.broadcast_to(np.zeros(1, np.float32), (100_000, 3, 224, 224))
    with pytest.raises(ValueError, match="holds more than 268435456 values"):
        model.predict(huge)
    with pytest.raises(ValueError, match="holds more than 268435456 values"):
        srhost.sr_map(np.broadcast_to(np.zeros(1, np.float32), (3, 20_000, 20_000)))


def test_four_threads_give_the_maps_of_one(model):
    crop = model.crop(photo("coffee"))
    one = srhost.saliency(crop, **SALIENCY)
    rel = model.explain(photo("coffee"), **LRP)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = (srhost.saliency(crop, **SALIENCY), model.explain(photo("coffee"), **LRP))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s, r in results:
        assert np.array_equal(s, one) and np.array_equal(r, rel)


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_a_thousand_calls_leave_memory_flat():
    rng = np.random.default_rng(1)
    img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    rel = rng.standard_normal((3, 48, 48)).astype(np.float32)

    def calls(n):
        for _ in range(n):
            s = srhost.saliency(img, method="itti")
            m = srhost.sr_map(rel, method="itti")
            srhost.ssim(s, m)

    calls(100)  # warm-up: allocator pools, the stage registry
    before = rss_mib()
    calls(1000)
    grown = rss_mib() - before
    # 1,000 calls each allocate about 50 KB of outputs: a leak of any of them would show as
    # 50 MB or more.
    assert grown < 20, f"resident memory grew by {grown:.1f} MiB over 1,000 calls"


def test_a_plugin_stage_becomes_usable_by_name():
    so = _tool("SRHOST_PLUGIN_SO", "target/debug/libsr_plugin_example.so")
    assert "saliency.frequency-tuned" in srhost.load_plugin(so)
    assert "saliency.frequency-tuned" in srhost.stages()
    s = srhost.saliency(np.zeros((16, 16, 3), np.uint8) + 100, method="frequency-tuned", blur=3)
    assert s.shape == (16, 16) and np.isfinite(s).all()


def test_the_example_notebook_runs(tmp_path, monkeypatch):
    nb = json.loads((REPO / "docs/examples/zennit-to-sr-map.ipynb").read_text())
    monkeypatch.chdir(REPO)
    ns = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "zennit-to-sr-map.ipynb", "exec"), ns)
    assert ns["ssim2"] > ns["ssim1"]
    assert [Path(p).name for p in ns["paths"]] == ["panel.png"]


def test_an_onnx_model_gives_the_torchvision_models_logits_and_maps(model):
    # The shipped Lite0 as ONNX, run by ONNX Runtime (ORT_DYLIB_PATH, as the CLI), against the
    # same weights in the torchvision backend (configs/onnx.toml's normalisation).
    onnx = srhost.Model.onnx(str(REPO / "assets/models/efficientnet-lite0.onnx"),
                             mean=[0.498] * 3, std=[0.502] * 3)
    a, b = onnx.predict(photo("coffee")), model.predict(photo("coffee"))
    assert max_abs(a, b) <= 1e-4 * np.abs(b).max()
    ra = onnx.explain(photo("coffee"), **LRP).ravel()
    rb = model.explain(photo("coffee"), **LRP).ravel()
    assert np.corrcoef(ra, rb)[0, 1] >= 0.9999
    # runtime="srhost": srhost's executor classifies instead of ONNX Runtime.
    own = srhost.Model.onnx(str(REPO / "assets/models/efficientnet-lite0.onnx"),
                            mean=[0.498] * 3, std=[0.502] * 3, runtime="srhost")
    assert max_abs(own.predict(photo("coffee")), a) <= 1e-4 * np.abs(a).max()
    with pytest.raises(ValueError, match="`runtime` must be onnxruntime or srhost"):
        srhost.Model.onnx(str(REPO / "assets/models/efficientnet-lite0.onnx"), runtime="tvm")


def test_every_built_in_stage_is_registered():
    # A cdylib may lose `inventory` registrations at link time (a build once lost five of
    # them); the package registers each built-in crate's stages by name as well.
    assert {
        "model.onnx", "model.torchvision", "model.candle", "relevance.lrp", "relevance.gradient",
        "relevance.gradient-x-input", "relevance.deeplift", "relevance.file", "relevance.rollout",
        "saliency.context-aware", "saliency.itti", "renderer.heatmap", "renderer.edge-overlay",
        "renderer.panel",
    } <= set(srhost.stages())


def test_an_exported_vision_transformer_explains_with_attnlrp():
    # A small torchvision ViT as torch.onnx.export writes it by default (weights in
    # vit_dynamo.onnx.data beside it), explained with AttnLRP and CP-LRP: the maps of
    # scripts/make_transformer_fixtures.py's float64 autograd references (and for cp-lrp, of
    # LXT itself), on the golden input; a batch gives its images' maps one by one.
    fx = REPO / "tests/fixtures/transformers"
    vit = srhost.Model.onnx(str(fx / "vit_dynamo.onnx"), labels="none")
    x = np.stack([np.load(REPO / f"tests/fixtures/golden/inputs/{p}/input_imagenet.npy")[0]
                  for p in PHOTOS]).astype(np.float32)
    logits = vit.predict(x)
    for i, p in enumerate(PHOTOS):
        want = np.load(fx / f"vit/{p}/logits.npy")[0]
        assert max_abs(logits[i], want) <= 1e-5 * np.abs(want).max()
    for composite, ref in [("attnlrp", "attnlrp"), ("cp-lrp", "lxt_cplrp")]:
        r = vit.explain(x, composite=composite, epsilon=1e-9)
        assert r.shape == (2, 3, 224, 224)
        for i, p in enumerate(PHOTOS):
            want = np.load(fx / f"vit/{p}/{ref}.npy")[0]
            assert np.corrcoef(r[i].ravel(), want.ravel())[0, 1] >= 0.99999, (composite, p)
        one = vit.explain(x[1:], composite=composite, epsilon=1e-9)
        assert np.array_equal(one[0], r[1])


# The saliency benchmark's metrics against pysaliency / POT / scipy reference values
# (tests/fixtures/saliency_metrics, scripts/make_saliency_metric_fixtures.py). The maps reach
# srhost as float32 (the package's array type), the references were computed in float64 on the
# float64 maps: 1e-5 relative covers that rounding (the Rust tests match to 1e-12 in float64).
METRIC_REL_TOL = 1e-5


def test_saliency_metrics_match_the_references():
    cases = json.loads((REPO / "tests/fixtures/saliency_metrics/cases.json").read_text())["cases"]
    n = 0
    for case in cases:
        h, w = case["h"], case["w"]
        pred = np.array(case["pred"], dtype=np.float32).reshape(h, w)
        truth = np.array(case["truth"], dtype=np.float32).reshape(h, w)
        fix = [tuple(p) for p in case["fixations"]]
        other = [tuple(p) for p in case["other_fixations"]]
        got = {
            "cc": srhost.cc(pred, truth),
            "sim": srhost.sim(pred, truth),
            "kl": srhost.kl(pred, truth),
            "spearman": srhost.spearman(pred, truth),
            "emd_8": srhost.emd(pred, truth, cells=8),
            "emd_16": srhost.emd(pred, truth),
            "nss": srhost.nss(pred, fix),
            "auc_judd": srhost.auc_judd(pred, fix),
            "auc_borji": srhost.auc_borji(pred, fix),
            "auc_shuffled": srhost.auc_shuffled(pred, fix, other),
        }
        for k, v in got.items():
            want = case["reference"][k]
            assert v == pytest.approx(want, rel=METRIC_REL_TOL, abs=1e-6), (case["name"], k, v, want)
            n += 1
    assert n == 30


def test_saliency_metrics_reject_bad_input():
    a = np.zeros((4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="one shape"):
        srhost.cc(a, np.zeros((4, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="outside the 4 x 5 map"):
        srhost.nss(a, [(5, 0)])
    with pytest.raises(ValueError, match="no fixations"):
        srhost.auc_judd(a, [])
    with pytest.raises(ValueError, match="cells"):
        srhost.emd(a, a, cells=0)
    with pytest.raises(ValueError):
        srhost.sim(np.full((4, 5), np.nan, dtype=np.float32), a)


def test_randomization_matches_quantus():
    """srhost.randomization on the small CNN of tests/fixtures/mprt against Quantus 0.6.0's
    MPRT, efficient MPRT and smooth MPRT (scripts/make_mprt_fixtures.py; tests/mprt.rs checks
    the CLI the same way)."""
    fx = REPO / "tests/fixtures/mprt"
    f = json.loads((fx / "quantus.json").read_text())
    net = srhost.Model.onnx(fx / "net.onnx", runtime="srhost", mean=f["mean"], std=f["std"], resize=0)
    r = srhost.randomization(net, str(fx / "photo.png"), method="gradient", steps=0, seed=f["seed"])
    assert r["target"] == f["target"]
    assert [s[0] for s in r["steps"]] == [l["onnx_name"] for l in f["layers_top_down"]]
    for k, layer in enumerate(f["layers_top_down"]):
        assert r["spearman"][k] == pytest.approx(f["mprt"][layer["module"]], abs=1e-4), layer
    assert r["emprt"] == pytest.approx(f["emprt"], abs=1e-4)
    assert len(r["ssim"]) == 3 and r["samples"] == 1
    s = srhost.randomization(net, str(fx / "photo.png"), method="gradient", steps=0, seed=f["seed"],
                             samples=f["smooth_samples"], noise=f["smooth_noise"])
    for k, layer in enumerate(f["layers_top_down"]):
        draws = np.array([d[layer["module"]] for d in f["smprt_by_numpy_seed"]])
        assert abs(s["spearman"][k] - draws.mean()) <= 4 * draws.std(ddof=1), (layer, s["spearman"][k])
    with pytest.raises(ValueError, match="order"):
        srhost.randomization(net, str(fx / "photo.png"), order="sideways")
    with pytest.raises(ValueError, match="randomization_samples"):
        srhost.randomization(net, str(fx / "photo.png"), samples=0)


def test_discrete_entropy_matches_quantus():
    cases = json.loads((REPO / "tests/fixtures/mprt/quantus.json").read_text())["entropy_cases"]
    n = 0
    for c in cases:
        # srhost reads arrays as float32: the cases whose values sit on or near bin edges in
        # float64 (edges, heavy_tail) are checked in float64 by tests/mprt.rs only.
        if c["name"].split("_")[0] in ("edges", "heavy"):
            continue
        v = np.array(c["values"], dtype=np.float32)
        assert srhost.discrete_entropy(v, bins=c["bins"]) == pytest.approx(c["entropy"], abs=1e-6), c["name"]
        n += 1
    assert n == 6
    with pytest.raises(ValueError, match="bins"):
        srhost.discrete_entropy(np.zeros(3, dtype=np.float32), bins=0)
