//! CPU benchmarks, one group per area (`cpu/<area>/<model or input>/<batch or size>`).
//! What each is compared against is timed by the scripts beside this file in the same run
//! (see benches/README.md): PyTorch's forward, Zennit's and Captum's LRP, the numpy brute force
//! of the context-aware saliency.
//!
//!     cargo bench --bench cpu                     # everything
//!     cargo bench --bench cpu -- forward          # one area
//!     SRHOST_BENCH_RATIO=1 cargo bench --bench cpu # LRP / forward, interleaved (see below)
//!
//! VGG-16 uses random weights (no trained weights ship with srhost); the architecture and the
//! arithmetic are the real ones.

use criterion::{criterion_group, BenchmarkId, Criterion};
use sr_backend_onnx::{OnnxModel, OnnxParams};
use sr_backend_torchvision::{weights::Weights, TorchvisionModel, TorchvisionParams};
use sr_core::{Explainer, Model, ModelStage, Relevance, RelevanceStage, Request, Tensor};
use sr_relevance_lrp::{Lrp, LrpParams};
use std::sync::Arc;
use std::time::Duration;

/// As in `srhost`: large freed buffers are kept for reuse (sr_nn::alloc).
#[global_allocator]
static ALLOC: sr_nn::alloc::ReuseLarge = sr_nn::alloc::ReuseLarge;

/// Deterministic pseudo-random normal-ish values (sum of uniforms), scaled.
fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0.0;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 11) as f32 / (1u64 << 53) as f32;
            }
            (acc - 2.0) * scale * 1.7
        })
        .collect()
}

/// torchvision VGG-16 with Kaiming-scaled random weights and 1000 classes.
fn vgg16() -> TorchvisionModel {
    let mut w = Weights::new();
    let cfg = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let (mut i, mut cin) = (0, 3);
    for (k, &c) in cfg.iter().enumerate() {
        if c == 0 {
            i += 1;
            continue;
        }
        let fan = (cin * 9) as f32;
        w.insert(
            format!("features.{i}.weight"),
            Tensor::new(
                vec![c, cin, 3, 3],
                randn(c * cin * 9, k as u64, (2.0 / fan).sqrt()),
            )
            .unwrap(),
        );
        w.insert(format!("features.{i}.bias"), Tensor::zeros(vec![c]));
        cin = c;
        i += 2;
    }
    for (name, o, inp) in [
        ("classifier.0", 4096, 25088),
        ("classifier.3", 4096, 4096),
        ("classifier.6", 1000, 4096),
    ] {
        w.insert(
            format!("{name}.weight"),
            Tensor::new(
                vec![o, inp],
                randn(o * inp, o as u64 + inp as u64, (2.0 / inp as f32).sqrt()),
            )
            .unwrap(),
        );
        w.insert(format!("{name}.bias"), Tensor::zeros(vec![o]));
    }
    TorchvisionModel::from_weights(
        &TorchvisionParams {
            arch: "vgg16".into(),
            ..Default::default()
        },
        &w,
        "random VGG-16",
    )
    .unwrap()
}

fn lite0() -> TorchvisionModel {
    TorchvisionModel::load(TorchvisionParams::default()).unwrap()
}

fn batch(n: usize) -> Tensor {
    Tensor::new(vec![n, 3, 224, 224], randn(n * 3 * 224 * 224, 7, 1.0)).unwrap()
}

fn models() -> Vec<(&'static str, Arc<dyn Model>)> {
    vec![
        ("efficientnet_lite0", Arc::new(lite0())),
        ("vgg16", Arc::new(vgg16())),
    ]
}

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/forward");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for (name, m) in models() {
        for n in [1, 8] {
            let x = batch(n);
            g.bench_with_input(BenchmarkId::new(name, format!("batch{n}")), &x, |b, x| {
                b.iter(|| m.forward(x).unwrap())
            });
        }
    }
    g.finish();
}

/// The same models on the ONNX backend (ONNX Runtime through `ort`): EfficientNet-Lite0 from
/// the shipped export; VGG-16 from `target/bench-vgg16.onnx`, written by
/// `python3 benches/pytorch_reference.py --export-vgg16-onnx target/bench-vgg16.onnx`
/// (random weights; skipped with a note when absent). Needs ONNX Runtime (ORT_DYLIB_PATH).
fn forward_ort(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/forward_ort");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut models = vec![(
        "efficientnet_lite0",
        OnnxParams {
            path: root
                .join("assets/models/efficientnet-lite0.onnx")
                .display()
                .to_string(),
            mean: Some(vec![0.498; 3]),
            std: Some(vec![0.502; 3]),
            ..Default::default()
        },
    )];
    let vgg = root.join("target/bench-vgg16.onnx");
    if vgg.exists() {
        models.push((
            "vgg16",
            OnnxParams {
                path: vgg.display().to_string(),
                ..Default::default()
            },
        ));
    } else {
        eprintln!(
            "cpu/forward_ort/vgg16: skipped, {} is missing (see benches/README.md)",
            vgg.display()
        );
    }
    for (name, p) in models {
        let m = match OnnxModel::load(p) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("cpu/forward_ort/{name}: skipped: {e}");
                continue;
            }
        };
        for n in [1, 8] {
            let x = batch(n);
            g.bench_with_input(BenchmarkId::new(name, format!("batch{n}")), &x, |b, x| {
                b.iter(|| m.forward(x).unwrap())
            });
        }
    }
    g.finish();
}

fn lrp(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/lrp");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for (name, m) in models() {
        for composite in ["epsilon", "srp", "epsilon-plus-flat"] {
            let l = Lrp::build(LrpParams {
                composite: composite.into(),
                epsilon: 0.25,
                ..Default::default()
            })
            .unwrap();
            // Bound once, as srhost binds a branch once per run; each image is one explain.
            let e = l.bind(m.clone()).unwrap();
            for n in [1, 8] {
                let x = batch(n);
                let t = vec![1usize; n];
                g.bench_with_input(
                    BenchmarkId::new(format!("{composite}/{name}"), format!("batch{n}")),
                    &x,
                    |b, x| b.iter(|| e.explain(&Request::new(x, &t)).unwrap()),
                );
            }
        }
    }
    g.finish();
}

fn context_aware(c: &mut Criterion) {
    use sr_saliency_context_aware::ca;
    let mut g = c.benchmark_group("cpu/context_aware");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for photo in ["coffee.png", "astronaut.png"] {
        let img = srhost_tests::ca_png(&srhost_tests::photo(photo));
        for size in [128, 250] {
            for (variant, cfg) in [
                ("reference", ca::Config::reference()),
                ("fast", {
                    let mut f = ca::Config::reference();
                    f.candidate_strides = f.half_sizes.iter().map(|h| 2 * h).collect();
                    f
                }),
            ] {
                let cfg = ca::Config {
                    max_dim: size,
                    ..cfg
                };
                g.bench_with_input(
                    BenchmarkId::new(format!("{variant}/{photo}"), size),
                    &img,
                    |b, img| b.iter(|| ca::saliency(img, &cfg)),
                );
            }
        }
    }
    g.finish();
}

/// Context-aware saliency on what the Table-1 pipeline feeds it most: relevance maps (the
/// shipped Lite0's `srp` and `epsilon-plus-flat` maps of two sample photos, as the stage's
/// `abs-rgb` input image; benches/inputs/, made by benches/make_relevance_inputs.py), beside
/// the same photos. Compared with the numpy brute force on the same inputs
/// (benches/ca_reference.py --relevance).
fn context_aware_relevance(c: &mut Criterion) {
    use sr_saliency_context_aware::ca;
    let mut g = c.benchmark_group("cpu/context_aware_relevance");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    let cfg = ca::Config {
        max_dim: 250,
        ..ca::Config::reference()
    };
    for photo in ["coffee", "astronaut"] {
        for map in ["srp", "epsilon-plus-flat"] {
            let img = relevance_input(&format!("{photo}-{map}"));
            g.bench_with_input(
                BenchmarkId::new(format!("reference/{photo}-{map}"), 250),
                &img,
                |b, img| b.iter(|| ca::saliency(img, &cfg)),
            );
        }
    }
    g.finish();
}

/// A relevance map of benches/inputs/ (`<photo>-<method>`) as the context-aware search's input.
fn relevance_input(name: &str) -> sr_saliency_context_aware::imresize::Img {
    srhost_tests::ca_npy(&srhost_tests::repo().join(format!("benches/inputs/{name}.npy")))
}

/// A sample photo as a saliency stage's input: RGB in [0, 1].
fn photo_image(name: &str) -> sr_core::Image {
    let p = image::open(srhost_tests::photo(name)).unwrap().to_rgb8();
    let (w, h) = p.dimensions();
    sr_core::Image::new(
        w as usize,
        h as usize,
        3,
        p.into_raw().iter().map(|&v| v as f32 / 255.0).collect(),
    )
    .unwrap()
}

/// Context-aware saliency through its stage (`Saliency::saliency` on an `Image`, as srhost and
/// the Python package call it: the f32 -> f64 copy, the search and the resize back to the photo's
/// size), the Rust side of benches/python_saliency.py.
fn context_aware_stage(c: &mut Criterion) {
    use sr_core::{Saliency, SaliencyStage};
    use sr_saliency_context_aware::{CaParams, ContextAware};
    let mut g = c.benchmark_group("cpu/context_aware_stage");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    let s = ContextAware::build(CaParams {
        variant: "reference".into(),
        max_dim: 250,
        ..Default::default()
    })
    .unwrap();
    for photo in ["coffee.png", "astronaut.png"] {
        let img = photo_image(photo);
        g.bench_with_input(
            BenchmarkId::new(format!("reference/{photo}"), 250),
            &img,
            |b, img| b.iter(|| s.saliency(img).unwrap()),
        );
    }
    g.finish();
}

/// Context-aware saliency scale by scale (issue 33's floors): each scale's search of coffee's
/// `srp` map, of the photo and of astronaut's `srp` map, with the pruned search, the screened brute force with each
/// kernel this CPU runs, and each kernel's integer products alone (every query times every
/// candidate chunk, no screen: the brute force's floor). Same inputs as
/// `cpu/context_aware_relevance`.
fn context_aware_scales(c: &mut Criterion) {
    use sr_saliency_context_aware::search::{Kernel, Search};
    use sr_saliency_context_aware::{brute, ca};
    let mut g = c.benchmark_group("cpu/context_aware_scales");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let cfg = ca::Config {
        max_dim: 250,
        ..ca::Config::reference()
    };
    let coffee = relevance_input("coffee-srp");
    let astronaut = relevance_input("astronaut-srp");
    let photo = srhost_tests::ca_png(&srhost_tests::photo("coffee.png"));
    for (name, img) in [
        ("coffee-srp", &coffee),
        ("coffee.png", &photo),
        ("astronaut-srp", &astronaut),
    ] {
        for (i, s) in ca::scale_searches(img, &cfg).iter().enumerate() {
            let id = |what: &str| BenchmarkId::new(format!("{name}/scale{i}/{what}"), s.q.dim);
            g.bench_function(id("pruned"), |b| b.iter(|| s.sums(cfg.c, Search::Pruned)));
            for kernel in Kernel::supported_here() {
                g.bench_function(id(&format!("brute-{}", kernel.name())), |b| {
                    b.iter(|| brute::forced(&s.q, &s.cand, s.k, cfg.c, s.row_len, kernel))
                });
                g.bench_function(id(&format!("products-{}", kernel.name())), |b| {
                    b.iter(|| brute::products_only(&s.q, &s.cand, s.row_len, kernel))
                });
            }
        }
    }
    g.finish();
}

fn itti(c: &mut Criterion) {
    use sr_core::{Saliency, SaliencyStage};
    use sr_saliency_itti::{Itti, IttiParams};
    let mut g = c.benchmark_group("cpu/itti");
    g.sample_size(20);
    let img = photo_image("astronaut.png");
    let s = Itti::build(IttiParams { max_dim: 256 }).unwrap();
    g.bench_function("astronaut.png/256", |b| {
        b.iter(|| s.saliency(&img).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    forward,
    forward_ort,
    lrp,
    context_aware,
    context_aware_relevance,
    context_aware_stage,
    context_aware_scales,
    itti
);

/// `SRHOST_BENCH_RATIO=1 cargo bench --bench cpu`: LRP-epsilon and srp against our forward,
/// the three calls interleaved per round, each round's LRP / forward ratio taken and the median
/// (and quartiles) of `SRHOST_BENCH_ROUNDS` (default 11) rounds reported, so a slow spell of a
/// shared machine hits both sides of a ratio alike. The
/// value may narrow the models and batches (`vgg16-b1`, `efficientnet_lite0-b8`, ...);
/// `SRHOST_BENCH_COMPOSITES` (default `epsilon,srp`) names the composites.
fn interleaved_ratios() {
    let which = std::env::var("SRHOST_BENCH_RATIO").unwrap_or_default();
    let pick = |key: &str| which == "1" || which.is_empty() || which.contains(key);
    let rounds: usize = std::env::var("SRHOST_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    for (name, m) in models() {
        for n in [1usize, 8] {
            if !(pick(name) && pick(&format!("b{n}"))) {
                continue;
            }
            let (x, t) = (batch(n), vec![1usize; n]);
            let composites =
                std::env::var("SRHOST_BENCH_COMPOSITES").unwrap_or_else(|_| "epsilon,srp".into());
            let methods: Vec<(&str, Box<dyn Explainer>)> = composites
                .split(',')
                .map(|c| {
                    let p = LrpParams {
                        composite: c.into(),
                        epsilon: 0.25,
                        ..Default::default()
                    };
                    (c, Lrp::build(p).unwrap().bind(m.clone()).unwrap())
                })
                .collect();
            let forward = || {
                std::hint::black_box(m.forward(&x).unwrap());
            };
            forward();
            for (_, l) in &methods {
                l.explain(&Request::new(&x, &t)).unwrap();
            }
            let mut tf = vec![];
            let mut tl = vec![vec![]; methods.len()];
            for _ in 0..rounds {
                tf.push(time(&forward));
                for (k, (_, l)) in methods.iter().enumerate() {
                    tl[k].push(time(&|| {
                        std::hint::black_box(l.explain(&Request::new(&x, &t)).unwrap());
                    }));
                }
            }
            // Each round's own ratio (its LRP against the forward just before it), then the
            // median and quartiles of those: a slow spell moves both sides of one round.
            let mut tf_sorted = tf.clone();
            let f = median(&mut tf_sorted);
            for (k, (c, _)) in methods.iter().enumerate() {
                let mut ratios: Vec<f64> = tl[k].iter().zip(&tf).map(|(l, f)| l / f).collect();
                let l = median(&mut tl[k]);
                let r = median(&mut ratios);
                let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
                println!(
                    "{name} batch{n} {c}: forward {:.1} ms, LRP {:.1} ms (medians), ratio of medians {:.3}; ratio per round: median {r:.3}, quartiles {:.3}-{:.3} ({rounds} rounds)",
                    f * 1e3,
                    l * 1e3,
                    l / f,
                    q(0.25),
                    q(0.75),
                );
            }
        }
    }
}

fn main() {
    if std::env::var_os("SRHOST_BENCH_RATIO").is_some() {
        interleaved_ratios();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
