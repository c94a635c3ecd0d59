"""Would an int8 MobileNetV2 be worth it? fp32 vs statically quantised int8 ONNX, speed and agreement.

    .venv/bin/python benchmarks/bench_model_int8.py [--n 256] [--calib 64] [--rounds 5] [--no-results]

An experiment, not a feature: quantises the cached fp32 export with onnxruntime.quantization
(QDQ, per-channel weights, calibrated on --calib CUHK01 images that are NOT among the --n timed
ones) into a temporary folder, then times both models interleaved on the same preprocessed batches
of 32 and reports the ratio of medians, plus how close the int8 vectors are to the fp32 ones:
cosine per image, whether each image's nearest neighbour (among the n) stays the same, and how often
that neighbour is the same person (CUHK01 identity folders: a rough retrieval-quality check).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, append_result, image_files, machine, median, print_json, ratio  # noqa: E402

import numpy as np  # noqa: E402

from peoplemap.config import load_settings  # noqa: E402
from peoplemap.embed.mobilenetv2 import MobileNetV2Embedder  # noqa: E402
from peoplemap.embed.onnx_session import make_session  # noqa: E402
from peoplemap.ingest import read_image  # noqa: E402

BATCH = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calibrate", default="minmax", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    files = image_files(SHARED_DATA / "cuhk01_campus_first486")
    calib_files, timed_files = files[-args.calib:], files[:args.n]
    emb = MobileNetV2Embedder(replace(load_settings(), batch_size=BATCH))
    fp32_path = emb.onnx_path
    emb.run_tensor(np.zeros((1, 3, 224, 224), np.float32))  # exports if not cached

    def tensors(paths: list[str]) -> list[np.ndarray]:
        px = [read_image(p, min_side=224)[1].pixels for p in paths]
        return [emb.preprocess(px[i:i + BATCH]) for i in range(0, len(px), BATCH)]

    calib = tensors(calib_files)
    batches = tensors(timed_files)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": b[i:i + 1]} for b in calib for i in range(len(b))])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="peoplemap-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        int8 = Path(tmp) / "int8.onnx"
        t = time.perf_counter()
        quant_pre_process(str(fp32_path), str(pre))
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile}[args.calibrate])
        quant_s = time.perf_counter() - t
        sessions = {"fp32": make_session(fp32_path), "int8": make_session(int8)}
        for s in sessions.values():
            s.run(None, {"input": batches[0]})
        times: dict[str, list[float]] = {k: [] for k in sessions}
        outs: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for k in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
                t = time.perf_counter()
                out = [sessions[k].run(None, {"input": b})[0] for b in batches]
                times[k].append(time.perf_counter() - t)
                outs[k] = np.concatenate(out)
        int8_size = int8.stat().st_size

    n = sum(len(b) for b in batches)
    unit = {k: o / np.linalg.norm(o, axis=1, keepdims=True) for k, o in outs.items()}
    cos = np.sum(unit["fp32"] * unit["int8"], axis=1)
    nn = {}
    for k, u in unit.items():
        sim = u @ u.T
        np.fill_diagonal(sim, -np.inf)
        nn[k] = sim.argmax(axis=1)
    identity = np.array([Path(p).parent.name for p in timed_files])
    rate = {k: round(n / median(v), 1) for k, v in times.items()}
    data = {
        "benchmark": "bench_model_int8", "images": n, "batch": BATCH, "rounds": args.rounds,
        "images_per_s_median": rate, "ratio_int8_over_fp32": ratio(rate["int8"], rate["fp32"]),
        "cosine_fp32_int8": {"median": round(float(np.median(cos)), 4), "min": round(float(cos.min()), 4)},
        "same_nearest_neighbour": round(float(np.mean(nn["fp32"] == nn["int8"])), 3),
        "nearest_neighbour_same_identity": {k: round(float(np.mean(identity[v] == identity)), 3)
                                            for k, v in nn.items()},
        "calibrate": args.calibrate,
        "quantise_s": round(quant_s, 1), "int8_mb": round(int8_size / 1e6, 2),
        "fp32_mb": round(fp32_path.stat().st_size / 1e6, 2),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()}, "machine": machine(),
    }
    if not args.no_results:
        command = ".venv/bin/python benchmarks/bench_model_int8.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        append_result("MobileNetV2 fp32 vs int8 (experiment)", data, command, table=[{
            "fp32 img/s": rate["fp32"], "int8 img/s": rate["int8"], "int8/fp32": data["ratio_int8_over_fp32"],
            "cosine median (min)": f"{data['cosine_fp32_int8']['median']} ({data['cosine_fp32_int8']['min']})",
            "same nearest neighbour": data["same_nearest_neighbour"],
            "NN same identity fp32/int8": "{fp32}/{int8}".format(**data["nearest_neighbour_same_identity"]),
            "calibration": args.calibrate}],
            notes="Bare model on the same preprocessed CUHK01 batches of 32, interleaved.")
    print_json(data)


if __name__ == "__main__":
    main()
