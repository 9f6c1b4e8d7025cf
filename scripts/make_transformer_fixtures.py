"""Small vision transformers for tests/transformers.rs, each exported both ways torch writes
ONNX, with PyTorch's logits and reference relevance maps.

Models (10 classes, seeded random weights, see fixture_weights.randomise; the class token and
the position embedding drawn too):
- `vit`: torchvision's own `VisionTransformer(image_size=224, patch_size=16, num_layers=3,
  num_heads=3, hidden_dim=48, mlp_dim=96)` (nn.MultiheadAttention inside);
- `deit`: timm's `VisionTransformer` (the DeiT / ViT class of timm) with embed_dim 48, depth 2,
  3 heads: qkv as one Linear, `reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)`, fused attention;
- `swin`: torchvision's own `SwinTransformer` with two stages (patch 4, embed_dim 24, depths
  2 and 1, 3 heads, 7 x 7 windows): window partition and reverse, the cyclic shift of the
  second block (`torch.roll`, exported as Slice + Concat), the relative position bias and the
  shifted windows' attention mask (both constants in the file), and the patch merging between
  the stages (strided slices `x[..., 0::2, 1::2, :]`, concatenated, LayerNorm, a dense layer).

Exports, in tests/fixtures/transformers/:
- <name>_ts.onnx: `torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)`;
- <name>_dynamo.onnx and <name>_dynamo.onnx.data: `torch.onnx.export(model, (x,), path)`, the
  default call (the dynamo exporter, opset 20, weights in an external data file);
- <name>/<img>/logits.npy: PyTorch's logits on the golden inputs;
- <name>/<img>/attnlrp.npy and cplrp.npy: the reference maps for the top class, computed as
  gradient x input, by float64 autograd, of a functional copy of the model in which (LRP-0 for
  every linear map, which is what gradient x input is on them):
  - LayerNorm holds its normalising factor constant: (x - mean) / sqrt(var + eps).detach();
  - GELU passes relevance unchanged (the identity rule): x * (gelu(x) / x).detach();
  - attnlrp: a product of two computed values splits the relevance evenly (AttnLRP's uniform
    rule): (A @ B.detach() + A.detach() @ B) / 2; the softmax is left to autograd, whose
    gradient x input is AttnLRP's softmax rule x * (R - s sum R);
  - cplrp: the attention weights are held constant (CP-LRP): softmax(.).detach() @ v;
- <name>/coffee/gradient.npy: the plain gradient of the top logit (float64 autograd);
- vit/coffee/rollout.npy, deit/coffee/rollout.npy: attention rollout (Abnar and Zuidema 2020,
  residual 0.5, heads averaged, rows normalised), the class token's row over the patches, each
  patch's value over its pixels and channels, from the copy's recorded attention weights;
- <name>/coffee/deeplift.npy: DeepLIFT against the zero input, `(x - 0) * grad` of a copy whose
  GELUs apply the rescale rule, `gelu(b) + (x - b) * ((gelu(x) - gelu(b)) / (x - b)).detach()`
  with `b` each GELU's input on the baseline (recorded by a baseline pass); every other op
  passes the gradient (products, softmax, LayerNorm: what DeepLIFT's rescale rule leaves to
  the chain rule, as Captum does for ops it has no rule for);
- vit/<img>/lxt_cplrp.npy: LXT's own map for torchvision's ViT (lxt 2.1,
  `lxt.efficient.models.vit_torch.cp_LRP`: the identity rule on GELU, LayerNorm's factor held,
  CP-LRP inside attention, gradient x input in float64), the independent reference for
  srhost's `cp-lrp` (LXT has no AttnLRP map for torchvision's ViT, nor any for timm);
- versions.json.

    pip install torch torchvision timm onnx onnxscript lxt==2.1 "transformers<5" numpy
    python scripts/make_transformer_fixtures.py

(lxt's package init imports its LLM patches, which need a `transformers` older than 5.)
"""

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from fixture_weights import randomise

OUT = Path("tests/fixtures/transformers")
IMAGES = ["coffee", "chelsea"]


def tv_vit():
    return VisionTransformer(image_size=224, patch_size=16, num_layers=3, num_heads=3,
                             hidden_dim=48, mlp_dim=96, num_classes=10)


def timm_deit():
    return timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def tv_swin():
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 1], num_heads=[3, 3],
                           window_size=[7, 7], num_classes=10)


MODELS = {"vit": tv_vit, "deit": timm_deit, "swin": tv_swin}


PLAIN = ("plain", "record", "rescale")
# The baseline's GELU inputs, in call order (DeepLIFT's reference, below).
BASELINE_GELU = []


def ln(mod, x, rule):
    if rule in PLAIN:
        return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    var = (d * d).mean(-1, keepdim=True)
    return d / torch.sqrt(var + mod.eps).detach() * mod.weight + mod.bias


def gelu(x, rule):
    y = F.gelu(x)
    if rule == "plain":
        return y
    if rule == "record":
        BASELINE_GELU.append(x.detach())
        return y
    if rule == "rescale":
        # DeepLIFT's rescale rule: the value gelu(x), the slope (gelu(x) - gelu(b)) / (x - b)
        # (the derivative where |x - b| < 1e-10).
        b = BASELINE_GELU.pop(0)
        d = x - b
        xd = x.detach().requires_grad_(True)
        slope_at_x = torch.autograd.grad(F.gelu(xd).sum(), xd)[0]
        small = d.abs() < 1e-10
        m = torch.where(small, slope_at_x, (y - F.gelu(b)) / torch.where(small, torch.ones_like(d), d))
        return F.gelu(b) + d * m.detach()
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return x * torch.where(x == 0, torch.full_like(x, 0.5), y / safe).detach()


def product(a, b, rule):
    if rule == "attnlrp":
        return (a @ b.detach() + a.detach() @ b) / 2
    return a @ b


# Each attention layer's weights in order, when a list (attention rollout's reference).
ATTENTION = None


def attention(q, k, v, rule):
    """q, k, v: [B, H, T, d]."""
    scale = q.shape[-1] ** -0.5
    s = torch.softmax(product(q * scale, k.transpose(-2, -1), rule), dim=-1)
    if ATTENTION is not None:
        ATTENTION.append(s.detach()[0].double())
    if rule == "cplrp":
        return s.detach() @ v
    return product(s, v, rule)


def tv_forward(m, x, rule):
    n = x.shape[0]
    x = m._process_input(x)
    x = torch.cat([m.class_token.expand(n, -1, -1), x], dim=1)
    x = x + m.encoder.pos_embedding
    for blk in m.encoder.layers:
        y = ln(blk.ln_1, x, rule)
        sa = blk.self_attention
        e, h = sa.embed_dim, sa.num_heads
        qkv = F.linear(y, sa.in_proj_weight, sa.in_proj_bias)
        q, k, v = (t.reshape(n, -1, h, e // h).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        a = attention(q, k, v, rule).transpose(1, 2).reshape(n, -1, e)
        x = x + sa.out_proj(a)
        y = ln(blk.ln_2, x, rule)
        fc1, fc2 = blk.mlp[0], blk.mlp[3]
        x = x + fc2(gelu(fc1(y), rule))
    x = ln(m.encoder.ln, x, rule)
    return m.heads(x[:, 0])


def timm_forward(m, x, rule):
    n = x.shape[0]
    x = m.patch_embed(x)
    x = torch.cat([m.cls_token.expand(n, -1, -1), x], dim=1) + m.pos_embed
    for blk in m.blocks:
        y = ln(blk.norm1, x, rule)
        at = blk.attn
        h = at.num_heads
        qkv = at.qkv(y).reshape(n, -1, 3, h, at.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = attention(q, k, v, rule).transpose(1, 2).reshape(n, -1, h * at.head_dim)
        x = x + at.proj(a)
        y = ln(blk.norm2, x, rule)
        x = x + blk.mlp.fc2(gelu(blk.mlp.fc1(y), rule))
    x = ln(m.norm, x, rule)
    return m.head(x[:, 0])


def swin_mask(h, w, ws, shift, dtype):
    """The shifted windows' attention mask: -100 between tokens of different regions."""
    m = torch.zeros(h, w, dtype=dtype)
    count = 0
    for hs in ((0, h - ws[0]), (h - ws[0], h - shift[0]), (h - shift[0], h)):
        for wsl in ((0, w - ws[1]), (w - ws[1], w - shift[1]), (w - shift[1], w)):
            m[hs[0]:hs[1], wsl[0]:wsl[1]] = count
            count += 1
    m = m.view(h // ws[0], ws[0], w // ws[1], ws[1]).permute(0, 2, 1, 3).reshape(-1, ws[0] * ws[1])
    d = m.unsqueeze(1) - m.unsqueeze(2)
    return torch.where(d != 0, torch.full_like(d, -100.0), torch.zeros_like(d))


def swin_attention(mod, x, rule):
    """torchvision's shifted window attention (no padding: the windows tile the image)."""
    b, h, w, c = x.shape
    ws = mod.window_size
    shift = [0 if ws[i] >= (h, w)[i] else mod.shift_size[i] for i in range(2)]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    nh, nw = h // ws[0], w // ws[1]
    x = x.view(b, nh, ws[0], nw, ws[1], c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, ws[0] * ws[1], c)
    heads = mod.num_heads
    qkv = mod.qkv(x).reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = product(q * (c // heads) ** -0.5, k.transpose(-2, -1), rule)
    attn = attn + mod.get_relative_position_bias()
    if sum(shift) > 0:
        n = ws[0] * ws[1]
        mask = swin_mask(h, w, ws, shift, attn.dtype)
        attn = (attn.view(b, nh * nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
    s = torch.softmax(attn, dim=-1)
    y = s.detach() @ v if rule == "cplrp" else product(s, v, rule)
    y = mod.proj(y.transpose(1, 2).reshape(y.size(0), -1, c))
    y = y.view(b, nh, nw, ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if sum(shift) > 0:
        y = torch.roll(y, shifts=(shift[0], shift[1]), dims=(1, 2))
    return y


def swin_forward(m, x, rule):
    from torchvision.models.swin_transformer import PatchMerging
    conv, _, norm0 = m.features[0]
    x = ln(norm0, conv(x).permute(0, 2, 3, 1), rule)
    for stage in m.features[1:]:
        if isinstance(stage, PatchMerging):
            x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                           x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
            x = stage.reduction(ln(stage.norm, x, rule))
            continue
        for blk in stage:
            x = x + swin_attention(blk.attn, ln(blk.norm1, x, rule), rule)
            fc1, fc2 = blk.mlp[0], blk.mlp[3]
            x = x + fc2(gelu(fc1(ln(blk.norm2, x, rule)), rule))
    x = ln(m.norm, x, rule).permute(0, 3, 1, 2)
    return m.head(x.mean(dim=(2, 3)))


FORWARD = {"vit": tv_forward, "deit": timm_forward, "swin": swin_forward}


def rollout(model, fwd, x, residual=0.5):
    """Attention rollout (Abnar and Zuidema 2020) of the class token over the 14 x 14 patches,
    each patch's value over its 16 x 16 pixels and the 3 channels."""
    global ATTENTION
    ATTENTION = []
    with torch.no_grad():
        fwd(model, x.double(), "plain")
    layers, ATTENTION = ATTENTION, None
    t = layers[0].shape[-1]
    roll = torch.eye(t, dtype=torch.float64)
    for a in layers:
        m = (1 - residual) * a.mean(0) + residual * torch.eye(t, dtype=torch.float64)
        m = m / m.sum(-1, keepdim=True)
        roll = m @ roll
    g = int(round((t - 1) ** 0.5))
    grid = roll[0, 1:].reshape(g, g).numpy()
    up = np.kron(grid, np.ones((224 // g, 224 // g)))
    return np.broadcast_to(up, (1, 3, 224, 224)).astype(np.float32).copy()


def lxt_maps(model):
    """LXT's CP-LRP map of torchvision's ViT (patches the classes of this process: last)."""
    from lxt.efficient import monkey_patch
    from lxt.efficient.models.vit_torch import cp_LRP
    from torchvision.models import vision_transformer

    monkey_patch(vision_transformer, cp_LRP)
    model = model.double().eval()
    for img in IMAGES:
        x = torch.from_numpy(np.load(f"tests/fixtures/golden/inputs/{img}/input_imagenet.npy"))
        xd = x.double().requires_grad_(True)
        out = model(xd)
        target = int(out.argmax())
        out[0, target].backward()
        r = (xd * xd.grad).detach()
        ours = np.load(OUT / "vit" / img / "cplrp.npy")
        print("vit", img, "LXT cp-lrp sum R", float(r.sum()), "Pearson vs the functional copy",
              np.corrcoef(r.numpy().ravel(), ours.ravel())[0, 1])
        np.save(OUT / "vit" / img / "lxt_cplrp.npy", r.numpy().astype(np.float32))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    vit = None
    for seed, (name, make) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = make()
        randomise(model, gen)
        for pname, p in model.named_parameters():
            if pname in ("class_token", "cls_token"):
                p.data = torch.randn(p.shape, generator=gen) * 0.5
            if pname in ("encoder.pos_embedding", "pos_embed"):
                p.data = torch.randn(p.shape, generator=gen) * 0.2
            if pname.endswith("in_proj_weight"):
                p.data = torch.randn(p.shape, generator=gen) * (2.0 / p.shape[1]) ** 0.5
        model.eval()
        x0 = torch.zeros(1, 3, 224, 224)
        torch.onnx.export(model, (x0,), str(OUT / f"{name}_ts.onnx"), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["logits"])
        torch.onnx.export(model, (x0,), str(OUT / f"{name}_dynamo.onnx"))
        fwd = FORWARD[name]
        ref = model.double()
        for img in IMAGES:
            x = torch.from_numpy(np.load(f"tests/fixtures/golden/inputs/{img}/input_imagenet.npy"))
            d = OUT / name / img
            d.mkdir(parents=True, exist_ok=True)
            with torch.no_grad():
                logits = model.float()(x)
            model.double()
            np.save(d / "logits.npy", logits.numpy().astype(np.float32))
            target = int(logits.argmax())
            for rule, file in [("attnlrp", "attnlrp.npy"), ("cplrp", "cplrp.npy"), ("plain", None)]:
                xd = x.double().requires_grad_(True)
                out = fwd(ref, xd, rule)
                err = abs(float(out[0, target]) - float(logits[0, target]))
                assert err < 1e-4 * max(1.0, abs(float(logits[0, target]))), (name, rule, err)
                out[0, target].backward()
                if file:
                    r = (xd * xd.grad).detach()
                    np.save(d / file, r.numpy().astype(np.float32))
                    print(name, img, rule, "top", target, "logit", float(logits[0, target]),
                          "sum R", float(r.sum()))
                elif img == "coffee":
                    np.save(d / "gradient.npy", xd.grad.numpy().astype(np.float32))
            if img == "coffee" and name in ("vit", "deit"):
                np.save(d / "rollout.npy", rollout(ref, fwd, x))
            if img == "coffee":
                BASELINE_GELU.clear()
                fwd(ref, torch.zeros_like(x).double(), "record")
                xd = x.double().requires_grad_(True)
                out = fwd(ref, xd, "rescale")
                assert not BASELINE_GELU
                out[0, target].backward()
                np.save(d / "deeplift.npy", (xd * xd.grad).detach().numpy().astype(np.float32))
        if name == "vit":
            vit = model
    # LXT patches torch's classes (LayerNorm, GELU, MultiheadAttention) for the rest of the
    # process: after every export.
    lxt_maps(vit)
    versions = {p: importlib.metadata.version(p)
                for p in ["torch", "torchvision", "timm", "onnx", "onnxscript", "lxt", "numpy"]}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main()
