"""The peers srhost's CPU benches are compared against, timed on this machine:
PyTorch's forward (VGG-16 with random weights, EfficientNet-Lite0 with the shipped weights),
Zennit's EpsilonPlusFlat and Captum's LRP on the same models, at batch 1 and 8.

    python3 benches/pytorch_reference.py [--threads 2] [--repeats 5]
        [--composites epsilon_plus_flat epsilon_alpha2_beta1_flat epsilon_gamma_box] [--batches 1 8]
        [--no-captum]

Needs (PyPI): torch, zennit, captum, efficientnet-lite-pytorch==0.1.0, safetensors.
Prints one line per measurement (median seconds per call) and the library versions.
"""
import argparse
import statistics
import time

import torch


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class VGG16(torch.nn.Module):
    """torchvision's VGG-16 topology without torchvision: features, avgpool, classifier, and
    a functional flatten in forward (as torchvision does; Captum's LRP needs that)."""

    def __init__(self):
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        layers, cin = [], 3
        for c in cfg:
            if c == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(cin, c, 3, padding=1), torch.nn.ReLU(inplace=False)]
                cin = c
        self.features = torch.nn.Sequential(*layers)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(7)
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(25088, 4096), torch.nn.ReLU(), torch.nn.Dropout(),
            torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Dropout(),
            torch.nn.Linear(4096, 1000))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_plain():
    return VGG16().eval()


def lite0(weights):
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import load_file
    m = EfficientNet.from_name("efficientnet-lite0")
    m.load_state_dict(load_file(weights), strict=False)
    return m.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--weights", default="assets/models/efficientnet-lite0.safetensors")
    ap.add_argument("--forward-only", action="store_true", help="time the forward passes only")
    ap.add_argument("--composites", nargs="+", default=["epsilon_plus_flat"],
                    help="Zennit composites to time (srhost's names with _)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--export-vgg16-onnx", metavar="PATH",
                    help="write the random VGG-16 as ONNX (dynamic batch) for cpu/forward_ort, then exit")
    a = ap.parse_args()
    if a.export_vgg16_onnx:
        torch.manual_seed(0)
        torch.onnx.export(vgg16_plain(), torch.zeros(1, 3, 224, 224), a.export_vgg16_onnx, opset_version=13,
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import zennit
    import captum
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat
    from zennit.attribution import Gradient
    from captum.attr import LRP
    print(f"torch {torch.__version__}, zennit {zennit.__version__ if hasattr(zennit, '__version__') else '?'}, "
          f"captum {captum.__version__}, threads {a.threads}")
    models = {"vgg16": vgg16_plain(), "efficientnet_lite0": lite0(a.weights)}
    # The normalised images of pixel values 0 and 1 (ImageNet's mean/std; Lite0's 0.498/0.502):
    # the z^B box of the first layer, as srhost takes it from the model's normalisation.
    norm = {"vgg16": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            "efficientnet_lite0": ([127 / 255] * 3, [128 / 255] * 3)}

    def composite(c, name, n):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm[name])
        low = ((0 - mean) / std).expand(n, 3, 224, 224)
        high = ((1 - mean) / std).expand(n, 3, 224, 224)
        return {"epsilon_plus_flat": EpsilonPlusFlat, "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
                "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high)}[c]()

    for name, m in models.items():
        for n in a.batches:
            x = torch.randn(n, 3, 224, 224)
            with torch.no_grad():
                print(f"pytorch/forward/{name}/batch{n}: {timed(lambda: m(x), a.repeats):.4f} s")
            if a.forward_only:
                continue
            target = torch.zeros(n, 1000)
            target[:, 1] = 1
            for c in a.composites:
                comp = composite(c, name, n)

                def zen():
                    with Gradient(model=m, composite=comp) as attributor:
                        attributor(x.clone().requires_grad_(), target)
                print(f"zennit/{c}/{name}/batch{n}: {timed(zen, a.repeats):.4f} s")
            if name == "vgg16" and not a.no_captum:
                lrp = LRP(m)
                print(f"captum/lrp/{name}/batch{n}: "
                      f"{timed(lambda: lrp.attribute(x.clone().requires_grad_(), target=1), a.repeats):.4f} s")


if __name__ == "__main__":
    main()
