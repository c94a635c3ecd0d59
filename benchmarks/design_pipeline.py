"""The seed design's indexing pipeline, as written in ../shared/seed/original-design.md, timed.

    benchmarks/.venv-design/bin/python benchmarks/design_pipeline.py FOLDER [--limit N] [--json]

Runs under the TensorFlow virtualenv (see README.md), not under the project's .venv. The functions
below are the design's own code: cv2.imread + cv2.resize to 224x224 for every file, then
ThreadPoolExecutor().map(extract_feature) with one Keras `model.predict()` per image. Two changes,
both needed to run it at all and neither changing the work done per image:

* the model is `MobileNetV2(weights=None, ...)`: no ImageNet download; the arithmetic is identical;
* `load_images_from_folder` walks the folder recursively in peoplemap's scan order and stops after
  --limit image files (the design used os.listdir of one flat folder; the datasets have a folder
  per identity). The per-file body is the design's.

Keras prints a progress bar on every predict() call (the design keeps the default verbose); those
lines go to /dev/null here (sys.stdout is swapped while extracting) so the JSON stays readable. The
writes still happen, as they would in the design.

Timed: wall time of load (imread + resize of N files) + extract (the parallel predict calls), after
one warm-up predict; importing TensorFlow and building the model are not timed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import image_files, machine, print_json  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from tensorflow.keras.applications.mobilenet_v2 import MobileNetV2, preprocess_input  # noqa: E402
from tensorflow.keras.preprocessing import image  # noqa: E402


# ---- the design's code (original-design.md sections 1-3) --------------------------------------
def load_images_from_folder(paths, img_size=(224, 224)):
    images, filenames = [], []
    for img_path in paths:  # design: for filename in os.listdir(folder): img_path = join(folder, ...)
        filename = os.path.basename(img_path)
        img = cv2.imread(img_path)
        if img is not None:
            img = cv2.resize(img, img_size)
            images.append(img)
            filenames.append(filename)
    return images, filenames


def extract_feature(img, model):
    img_rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img_resized = cv2.resize(img_rgb, (224, 224))
    img_array = image.img_to_array(img_resized)
    img_array = np.expand_dims(img_array, axis=0)
    img_array = preprocess_input(img_array)
    feature = model.predict(img_array).flatten()
    return feature


def extract_features_parallel(images, model):
    with ThreadPoolExecutor() as executor:
        features = list(executor.map(lambda img: extract_feature(img, model), images))
    return np.array(features)
# -----------------------------------------------------------------------------------------------


def build_model():
    # The design: MobileNetV2(weights="imagenet", include_top=False, pooling="avg"); weights=None
    # avoids the download and computes exactly the same graph.
    return MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))


def run(folder: str, limit: int | None) -> dict:
    paths = image_files(folder, limit)
    if not paths:
        raise SystemExit(f"no image files under {folder}")
    model = build_model()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        extract_feature(np.zeros((224, 224, 3), np.uint8), model)  # warm-up: graph tracing
        t0 = time.perf_counter()
        images, filenames = load_images_from_folder(paths)
        t1 = time.perf_counter()
        features = extract_features_parallel(images, model)
        t2 = time.perf_counter()
    n = len(images)
    total = t2 - t0
    return {
        "pipeline": "design (cv2 + Keras predict per image, ThreadPoolExecutor)",
        "folder": os.path.abspath(folder),
        "files": len(paths),
        "images": n,
        "features_shape": list(features.shape),
        "load_s": round(t1 - t0, 3),
        "extract_s": round(t2 - t1, 3),
        "seconds": round(total, 3),
        "images_per_s": round(n / total, 2) if total > 0 else None,
        "workers": min(32, (os.cpu_count() or 1) + 4),  # ThreadPoolExecutor() default
        "machine": machine(("tensorflow-cpu", "keras", "opencv-python-headless")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--limit", type=int, default=None, help="first N image files (scan order)")
    ap.add_argument("--json", action="store_true", help="print the full JSON result")
    args = ap.parse_args()
    result = run(args.folder, args.limit)
    if args.json:
        print_json(result)
    else:
        print(f"{result['images']} images in {result['seconds']} s: {result['images_per_s']} images/s "
              f"(load {result['load_s']} s, extract {result['extract_s']} s)")


if __name__ == "__main__":
    main()
