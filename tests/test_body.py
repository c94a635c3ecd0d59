"""The `body` model, the body detector, collection-level re-ID steps (reid.py) and bring-your-own ONNX."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_set
from peoplemap import evaluate
from peoplemap.config import Settings
from peoplemap.detect.bodies import BodyDetector, is_person_crop, nms
from peoplemap.embed import Embedder, available_models, create_embedder
from peoplemap.embed import body as body_mod
from peoplemap.errors import InputError, ModelError
from peoplemap.ingest import read_image
from peoplemap.reid import Whitening, fit_whitening, k_reciprocal_rerank

CUHK_CAMERA = re.compile(r"^\d{4}00(?:(?P<A>[12])|(?P<B>[34]))")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache_dir=str(tmp_path_factory.mktemp("body-cache")), batch_size=16)


@pytest.fixture(scope="module")
def body(settings: Settings):
    e = create_embedder("body", settings=settings)
    e.load()  # exports the ONNX model once for the module
    return e


def person(seed: int, h: int = 160, w: int = 60) -> np.ndarray:
    """A generated 'person crop': coloured head / torso / legs blocks on a textured background."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(90, 140, (h, w, 3))).astype(np.uint8)
    cols = rng.integers(0, 256, (3, 3))
    x0, x1 = w // 4, 3 * w // 4
    img[h // 16:h // 5, 3 * w // 8:5 * w // 8] = cols[0]
    img[h // 5:h // 2, x0:x1] = cols[1]
    img[h // 2:15 * h // 16, x0:x1] = cols[2]
    return img


# -- the embedder --------------------------------------------------------------------------------

def test_registry_creates_body(body) -> None:
    assert "body" in available_models()
    assert isinstance(body, Embedder)
    assert body.name == "body" and body.item_kind == "body" and body.dim == body_mod.DIM
    assert body.weights_sha256[:12] in body.version and f"r{body_mod.REVISION}" in body.version
    d = body.describe()
    assert d["model"] == "body" and "stripes" in d["deep"]
    with pytest.raises(InputError, match="Unknown body detector"):
        create_embedder("body", detector="yolo")
    with pytest.raises(InputError, match="unknown option"):
        create_embedder("body", colour=3)


def test_embed_shapes_norms_and_determinism(body) -> None:
    crops = [person(i) for i in range(5)] + [person(9, 128, 48), person(10, 300, 90)]
    X = body.embed(crops)
    assert X.shape == (7, body.dim) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(body.embed(crops[:2]), X[:2], atol=1e-5)  # batch-independent
    assert body.embed([]).shape == (0, body.dim)
    # The mirror is averaged in, so a mirrored crop embeds (almost) identically.
    mirrored = body.embed([np.ascontiguousarray(crops[0][:, ::-1])])[0]
    assert float(mirrored @ X[0]) > 0.99
    # Different generated people are not identical.
    assert float(X[0] @ X[1]) < 0.999
    with pytest.raises(InputError, match="crop 0"):
        body.embed([np.zeros((10, 10), np.uint8)])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_matches_torch(body, settings: Settings, runtime: str) -> None:
    """fp32 matches torch in both runtimes; the default precision (bf16 where native) stays close."""
    torch = pytest.importorskip("torch")
    net = body_mod._torch_net(body.weights)
    pixels = body.resize([person(3), person(4)])
    x = np.stack([(pixels[..., c] * body_mod._SCALE[c] + body_mod._BIAS[c]) for c in range(3)], axis=1)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.astype(np.float32))).numpy()
    fp32 = create_embedder("body", settings=settings, runtime=runtime, precision="fp32")
    session = fp32._get_session()
    assert (session.runtime, session.precision) == (runtime, "fp32")
    np.testing.assert_allclose(session.run(None, {"input": x.astype(np.float32)})[0], expected, atol=1e-4)
    got = body._get_session().run(None, {"input": x.astype(np.float32)})[0]
    assert ((got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)).min() > 0.995


def test_color_histograms_unit_norm_and_stripes() -> None:
    top_red = np.zeros((1, 256, 128, 3), np.uint8)
    top_red[0, :128] = (255, 0, 0)
    top_red[0, 128:] = (0, 0, 255)
    H = body_mod.color_histograms(top_red)
    assert H.shape == (1, body_mod.COLOR_DIM)
    assert abs(float(np.linalg.norm(H)) - 1.0) < 1e-5
    per = H.reshape(body_mod.COLOR_STRIPES, -1)
    assert (per[0] > 0).sum() == 1 and (per[-1] > 0).sum() == 1 and per[0].argmax() != per[-1].argmax()


# -- regions -------------------------------------------------------------------------------------

def test_person_crop_is_one_whole_image_region(body) -> None:
    assert is_person_crop(160, 60) and is_person_crop(128, 48)
    assert not is_person_crop(600, 300)  # too big for a re-ID crop
    assert not is_person_crop(100, 100)  # not tall
    regions = body.detect(person(1))
    assert len(regions) == 1 and regions[0].box is None


def test_scene_without_people_has_no_regions() -> None:
    """A generated landscape scene: gradients and boxes, nobody in it. Documented: no body items."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], axis=2).astype(np.uint8)
    scene[300:400, 100:250] = (30, 120, 40)
    for backend in ("auto", "none"):
        assert BodyDetector(backend).detect(scene) == []


def test_detector_on_group_photo_finds_people_inside_the_image() -> None:
    """Real group photo: the auto backend (HOG with OpenCV 4, faces with dlib) finds someone."""
    det = BodyDetector("auto")
    if det.backend == "none":
        pytest.skip("no body detector installed (OpenCV 4 HOG or dlib)")
    path = shared_set("faceapi_bbt_faces") / "_group_photos_unlabeled" / "bbt1.jpg"
    _, decoded = read_image(path)
    img = decoded.pixels
    regions = det.detect(img)
    assert regions, "no body found in a group photo of four people"
    H, W = img.shape[:2]
    for r in regions:
        x, y, w, h = r.box
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H and h > w > 0
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)


def test_nms_drops_overlaps_and_nested_boxes() -> None:
    boxes = np.array([[0, 0, 64, 128], [4, 4, 64, 128], [200, 0, 64, 128], [10, 20, 30, 50]])
    assert nms(boxes, np.array([0.9, 0.8, 0.7, 0.5])) == [0, 2]
    assert nms(boxes, np.array([0.9, 0.8, 0.7, 0.95])) == [3, 2]  # the nested box scored better
    assert nms(np.zeros((0, 4)), np.zeros(0)) == []


def test_detector_validates() -> None:
    with pytest.raises(InputError, match="Unknown body detector"):
        BodyDetector("yolo")
    with pytest.raises(InputError, match="RGB uint8"):
        BodyDetector("none").detect(np.zeros((10, 10), np.uint8))


# -- real data: beats the seed model ------------------------------------------------------------

def _cuhk_subset(n_ids: int):
    root = shared_set("cuhk01_campus_first486")
    paths, hashes, images, ids, cams = [], [], [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))[:n_ids]:
        for f in sorted(d.iterdir()):
            digest, decoded = read_image(f)
            m = CUHK_CAMERA.match(f.name)
            paths.append(str(f)); hashes.append(digest); images.append(decoded.pixels)
            ids.append(d.name); cams.append(m.lastgroup)
    keep = evaluate.dedupe_by_hash(paths, hashes)
    return [images[i] for i in keep], np.array(ids)[keep], np.array(cams)[keep]


@pytest.mark.slow
def test_cross_camera_beats_mobilenetv2_on_cuhk01_subset(body, settings) -> None:
    images, ids, cams = _cuhk_subset(100)
    seed = create_embedder("mobilenetv2", settings=settings)
    base = evaluate.cross_camera_retrieval(seed.embed(images), ids, cams)
    X = body.embed(images)
    mine = evaluate.cross_camera_retrieval(X, ids, cams)
    white = evaluate.cross_camera_retrieval(fit_whitening(X, dim=128).apply(X), ids, cams)
    # Measured (400 images): mobilenetv2 rank1 0.24 mAP 0.27; body 0.45 / 0.45; whitened 0.65 / 0.67.
    assert mine["rank1"] >= base["rank1"] + 0.12 and mine["mAP"] >= base["mAP"] + 0.12, (base, mine)
    assert white["rank1"] >= mine["rank1"] + 0.10 and white["mAP"] >= mine["mAP"] + 0.10, (mine, white)


# -- reid.py -------------------------------------------------------------------------------------

def _clusters(n_ids=12, per=4, d=32, noise=0.8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, d))
    X = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((n_ids * per, d))
    X += 5.0 * rng.standard_normal(d)  # a shared offset, like a camera bias
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.repeat(np.arange(n_ids), per)


def test_whitening_fit_apply_save_load(tmp_path: Path) -> None:
    X, _ = _clusters()
    w = fit_whitening(X, dim=16, shrink=0.0)
    Y = w.apply(X)
    assert Y.shape == (len(X), 16) and Y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-5)
    # Full whitening decorrelates the (un-normalised) projections: identity covariance.
    Z = (X - w.mean) @ w.P
    np.testing.assert_allclose(np.cov(Z.T, bias=True), np.eye(16), atol=1e-3)
    path = tmp_path / "w.npz"
    w.save(path)
    w2 = Whitening.load(path)
    np.testing.assert_array_equal(w2.P, w.P)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["P", "mean"]
    # More dimensions than rows (the Gram-matrix path) and fewer both work.
    assert fit_whitening(X[:10], dim=256).dim == 9
    with pytest.raises(InputError, match="fitted on 32-d"):
        w.apply(np.zeros((2, 5), np.float32))
    with pytest.raises(InputError):
        fit_whitening(X[:1])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a whitening file"):
        Whitening.load(tmp_path / "bad.npz")


def test_rerank_shape_and_ranking() -> None:
    X, ids = _clusters(noise=0.5)
    q, g, qi, gi = X[::4], np.delete(X, np.s_[::4], axis=0), ids[::4], np.delete(ids, np.s_[::4])
    D = k_reciprocal_rerank(q, g, k1=6, k2=3, lambda_value=0.3)
    assert D.shape == (len(q), len(g)) and D.dtype == np.float32 and np.isfinite(D).all()
    r = evaluate.rank_k_and_map(D, qi, gi)
    assert r["rank1"] >= 0.9
    assert k_reciprocal_rerank(q[:0], g).shape == (0, len(g))
    with pytest.raises(InputError):
        k_reciprocal_rerank(q, g[:, :5])
    with pytest.raises(InputError):
        k_reciprocal_rerank(q, g, lambda_value=2.0)


# -- bring your own ONNX ----------------------------------------------------------------------------

def _gap_model(path: Path, layout: str = "NCHW", size=None, out_rank: int = 2) -> Path:
    """A tiny model: global average pool over the image (NCHW: GlobalAveragePool + Flatten)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    h, w = size if size else ("h", "w")
    if layout == "NCHW":
        inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, h, w])
        nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"])]
    else:
        inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", h, w, 3])
        nodes = [helper.make_node("Transpose", ["pixels"], ["t"], perm=[0, 3, 1, 2]),
                 helper.make_node("GlobalAveragePool", ["t"], ["pooled"])]
    if out_rank == 2:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["vec"], axis=1))
        out = helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["n", 3])
    elif out_rank == 4:
        nodes.append(helper.make_node("Identity", ["pooled"], ["vec"]))
        out = helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["n", 3, 1, 1])
    else:  # rank 1: no batch axis
        nodes.append(helper.make_node("ReduceMean", ["pooled"], ["vec"], keepdims=0))
        out = helper.make_tensor_value_info("vec", TensorProto.FLOAT, [None])
    graph = helper.make_graph(nodes, "gap", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnx_byo_embeds_mean_colour(tmp_path: Path, settings: Settings, layout: str) -> None:
    path = _gap_model(tmp_path / f"gap-{layout}.onnx", layout)
    e = create_embedder(f"onnx:{path}", settings=settings)
    assert isinstance(e, Embedder)
    assert e.name == f"onnx:{path.name}" and e.item_kind == "body" and e.dim == 3
    assert e.version.startswith(hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    red = np.zeros((40, 20, 3), np.uint8); red[..., 0] = 200
    mixed = np.zeros((40, 20, 3), np.uint8); mixed[..., 1] = 100; mixed[..., 2] = 100
    X = e.embed([red, mixed])
    np.testing.assert_allclose(X, [[1, 0, 0], [0, 2 ** -0.5, 2 ** -0.5]], atol=1e-5)
    assert e.describe()["input"].startswith("128x256 RGB " + layout)
    # bgr swaps the channels; mean/std apply per channel before the model.
    bgr = create_embedder(f"onnx:{path}", settings=settings, color="bgr")
    np.testing.assert_allclose(bgr.embed([red]), [[0, 0, 1]], atol=1e-5)
    assert bgr.version != e.version
    shifted = create_embedder(f"onnx:{path}", settings=settings, mean="0.5,0,0", std=(1, 1, 1))
    v = shifted.embed([mixed])[0]
    assert v[0] < 0


def test_onnx_byo_options_size_sidecar_and_kind(tmp_path: Path, settings: Settings) -> None:
    path = _gap_model(tmp_path / "fixed.onnx", size=(64, 32))
    e = create_embedder(f"onnx:{path}", settings=settings, item_kind="image")
    e.load()
    assert e.describe()["input"].startswith("32x64")  # W x H read from the model
    assert e.detect(np.zeros((50, 50, 3), np.uint8))[0].box is None
    with pytest.raises(InputError, match="does not fit"):
        create_embedder(f"onnx:{path}", settings=settings, input_size="100x100").load()
    with pytest.raises(InputError, match="item_kind"):
        create_embedder(f"onnx:{path}", settings=settings, item_kind="car")
    with pytest.raises(InputError, match="unknown option"):
        create_embedder(f"onnx:{path}", settings=settings, colour="rgb")
    dyn = _gap_model(tmp_path / "dyn.onnx")
    (tmp_path / "dyn.onnx.json").write_text(json.dumps({"input_size": [40, 80], "color": "bgr"}))
    s = create_embedder(f"onnx:{dyn}", settings=settings)
    assert s.color == "bgr" and s.describe()["input"].startswith("40x80 BGR")
    assert create_embedder(f"onnx:{dyn}", settings=settings, color="rgb").color == "rgb"  # kwargs win


def test_onnx_byo_errors(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ModelError, match="not found"):
        create_embedder(f"onnx:{tmp_path / 'missing.onnx'}", settings=settings)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        create_embedder(f"onnx:{junk}", settings=settings).load()
    rank1 = _gap_model(tmp_path / "rank1.onnx", out_rank=1)
    with pytest.raises(ModelError, match="rank >= 2|batch"):
        create_embedder(f"onnx:{rank1}", settings=settings).embed([np.zeros((8, 8, 3), np.uint8)])
    rank4 = _gap_model(tmp_path / "rank4.onnx", out_rank=4)  # (n, 3, 1, 1) is flattened
    assert create_embedder(f"onnx:{rank4}", settings=settings).embed([np.ones((8, 8, 3), np.uint8)]).shape == (1, 3)


def test_library_whitens_body_vectors_and_queries(tmp_path):
    """Body sets get a collection whitening after indexing: stored vectors stay raw, vectors() and
    search use the whitened space, and an image still finds itself first."""
    from peoplemap import Library
    from peoplemap.config import Settings

    folder = shared_set("col780_reid_2cam_8angle") / "001"
    with Library.open(tmp_path / "lib", create=True,
                      settings=Settings(cache_dir=str(tmp_path / "cache"))) as lib:
        lib.index(folder, model="body")
        _ids, raw = lib.vectors("body", raw=True)
        ids, X = lib.vectors("body")
        w = lib.whitening("body")
        assert w is not None and X.shape == (len(raw), w.dim) and w.dim < raw.shape[1]
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-4)
        q = sorted(folder.iterdir())[3]
        hits = lib.search(q, k=3, model="body")[0].hits
        assert hits[0].path == str(q) and hits[0].distance < 1e-2
