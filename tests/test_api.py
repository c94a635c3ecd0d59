"""The HTTP API end to end: a real `peoplemap serve` process on 127.0.0.1 and a real HTTP client.

Every route, the JSON being the CLI's `--json` (the same response types), the job lifecycle
(start, progress, 409 for a second writer, cancel keeping committed batches, resume, a killed
worker), reads served while a job writes, and each error case answering its status and a message.
Generated images and the fast fake model; one test with the real `face` model on dlib_johns.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image
from pydantic import TypeAdapter

from conftest import make_person_images, shared_set
from test_api_helpers import Server, png_declaring, run_job, wait_job, wait_until

from peoplemap.api.jobs import Job
from peoplemap.api.schemas import Different, Forgotten, ItemInfo, NotAFace, QueryResultOut
from peoplemap.cli import main
from peoplemap.responses import LibraryInfo, Person
from peoplemap.review import MergeSuggestion, ReviewGroup


def shape(data: Any, cls: type) -> Any:
    """Check `data` is `cls`'s JSON: exactly its fields, each of the right type."""
    if dataclasses.is_dataclass(cls):
        want = {f.name for f in dataclasses.fields(cls) if f.repr}
        assert set(data) == want, f"{cls.__name__}: keys {sorted(data)} != {sorted(want)}"
    TypeAdapter(cls).validate_python(data)
    return data


def error(r: httpx.Response, status: int, words: str = "") -> dict:
    """An error answer: the status, the one JSON error form, and `words` in its message."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and body["error"] and body["message"], body
    assert words.lower() in body["message"].lower(), body
    return body


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over a library of 4 generated people x 5 photos, indexed and clustered through
    the API itself; uploads limited to 1 MB."""
    base = tmp_path_factory.mktemp("api")
    root = base / "photos"
    make_person_images(root / "set1", n_people=4, per_person=5)
    server = Server(base / "lib", roots=(root,), env={"PEOPLEMAP_MAX_UPLOAD_MB": "1"}).start()
    client = server.client()
    try:
        indexed = run_job(client, "index", {"folder": "set1"})
        assert indexed["result"]["new"] == 20 and indexed["progress"]["done"] == 20
        clustered = run_job(client, "cluster", {"min_cluster_size": 3})
        assert clustered["result"]["n_clusters"] == 4
        yield server, client, root
    finally:
        client.close()
        server.stop()


def test_openapi_document_and_offline_docs(served):
    server, client, _root = served
    doc = client.get("/openapi.json").json()
    paths = set(doc["paths"])
    assert paths >= {"/search", "/people", "/people/{ref}", "/people/{ref}/merge",
                     "/people/{ref}/split", "/people/{ref}/confirm", "/people/{ref}/reject",
                     "/people/{ref}/different", "/people/{ref}/cover", "/people/suggestions",
                     "/review/groups", "/items/not-a-face", "/items/{item_id}",
                     "/items/{item_id}/thumbnail", "/items/{item_id}/photo", "/photos/{image_id}",
                     "/library", "/models", "/jobs", "/jobs/index", "/jobs/cluster",
                     "/jobs/{job_id}", "/jobs/{job_id}/cancel"}
    assert "delete" in doc["paths"]["/people/{ref}"] and "patch" in doc["paths"]["/people/{ref}"]
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn." not in page.text  # nothing loaded from the internet
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/models").json()["fake"]


@pytest.mark.browser
def test_docs_page_renders_offline_in_a_browser(served):
    """Swagger UI draws every operation in headless Chromium, and every request the page makes
    goes to the server itself (nothing from a CDN)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    server, _client, _root = served
    exe = os.environ.get("PEOPLEMAP_CHROMIUM") or shutil.which("chromium") or None
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, env=env,
                                    args=["--no-sandbox", "--disable-gpu", "--no-proxy-server"])
        try:
            page = browser.new_page()
            hosts = set()
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            page.goto(server.url + "/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() >= 25
            assert hosts == {f"127.0.0.1:{server.port}"}
        finally:
            browser.close()


def test_json_is_the_cli_json(served):
    """GET /people, /library and POST /search answer what `people list --json`, `info --json`
    and `search --json` print: the same response types' one JSON form."""
    server, client, root = served
    lib = str(server.library)
    run = CliRunner().invoke
    r = run(main, ["people", "list", "--library", lib, "--json"])
    assert r.exit_code == 0, r.output
    assert client.get("/people").json() == json.loads(r.stdout)
    r = run(main, ["info", "--library", lib, "--json"])
    assert r.exit_code == 0, r.output
    assert shape(client.get("/library").json(), LibraryInfo) == json.loads(r.stdout)
    query = root / "set1" / "person2" / "img1.png"
    r = run(main, ["search", str(query), "--library", lib, "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout)
    api = client.post("/search?k=4", files={"image": ("q.png", query.read_bytes())}).json()
    assert [{**d, "query": "-"} for d in api] == [{**d, "query": "-"} for d in cli]


def test_search_by_uploaded_photo(served):
    server, client, root = served
    query = root / "set1" / "person1" / "img0.jpg"
    r = client.post("/search", params={"k": 5}, files={"image": ("me.jpg", query.read_bytes())})
    assert r.status_code == 200, r.text
    results = TypeAdapter(list[QueryResultOut]).validate_python(r.json())
    assert len(results) == 1  # a whole-image model: the image is the one "face"
    res = results[0]
    assert res.query == "upload" and len(res.hits) == 5
    assert res.hits[0].path == str(query) and res.hits[0].distance < 1e-3
    assert [h.distance for h in res.hits] == sorted(h.distance for h in res.hits)
    assert {Path(h.path).parent.name for h in res.hits[:5]} == {"person1"}
    holder = next(p for p in client.get("/people").json() if res.hits[0].item_id in p["item_ids"])
    assert res.person_id == holder["id"] and res.cluster is not None
    # The raw body works too, and the declared type does not matter: the bytes do.
    raw = client.post("/search?k=5", content=query.read_bytes(),
                      headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json() == r.json()


def test_search_errors(served):
    _server, client, root = served
    search = "/search"
    error(client.post(search, content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty")
    error(client.post(search, files={"image": ("x.jpg", b"hello, I am text\n" * 20)}), 415,
          "not an image")
    error(client.post(search, files={"image": ("big.png", os.urandom(1_200_000))}), 413, "limit")
    error(client.post(search, files={"image": ("bomb.png", png_declaring(50_000, 50_000))}), 413,
          "pixels")
    jpeg = (root / "set1" / "person0" / "img0.jpg").read_bytes()
    error(client.post(search, files={"image": ("cut.jpg", jpeg[:300])}), 422, "")
    error(client.post(search, files={"photo": ("x.jpg", jpeg)}), 400, "field \"image\"")
    error(client.post(search, content=jpeg, headers={"Content-Type": "text/plain"}), 415, "photo")
    error(client.post(search + "?k=0", files={"image": ("x.jpg", jpeg)}), 422, "k")
    error(client.post(search + "?model=nope", files={"image": ("x.jpg", jpeg)}), 409, "nope")


def test_people_and_their_decisions(served):
    _server, client, _root = served
    people = [shape(p, Person) for p in client.get("/people").json()]
    assert len(people) == 4 and all(p["size"] == 5 for p in people)
    a, b = people[0], people[1]
    assert client.get(f"/people/{a['id']}").json() == a
    r = client.patch(f"/people/{a['id']}", json={"name": "Ada Lovelace"})
    assert shape(r.json(), Person)["name"] == "Ada Lovelace"
    assert client.get("/people/ada lovelace").json()["id"] == a["id"]  # names, any case
    assert client.patch(f"/people/{a['id']}", json={"hidden": True}).json()["hidden"] is True
    assert a["id"] not in [p["id"] for p in client.get("/people").json()]
    assert a["id"] in [p["id"] for p in client.get("/people?include_hidden=true").json()]
    client.patch("/people/Ada Lovelace", json={"hidden": False})
    error(client.patch(f"/people/{a['id']}", json={}), 422, "name")
    # split two items off, merge them back
    r = client.post(f"/people/{a['id']}/split", json={"item_ids": a["item_ids"][:2], "name": "Twin"})
    assert r.status_code == 201, r.text
    twin = shape(r.json(), Person)
    assert twin["name"] == "Twin" and sorted(twin["item_ids"]) == sorted(a["item_ids"][:2])
    assert client.get(f"/people/{a['id']}").json()["size"] == 3
    merged = client.post(f"/people/{a['id']}/merge", json={"others": ["Twin"]}).json()
    assert merged["size"] == 5 and merged["name"] == "Ada Lovelace"
    error(client.get("/people/Twin"), 404, "no person 'Twin'")
    # confirm one of a's items as b's, then reject it from b
    moved = a["item_ids"][0]
    assert moved in client.post(f"/people/{b['id']}/confirm", json={"item_ids": [moved]}).json()["item_ids"]
    r = client.post(f"/people/{b['id']}/reject", json={"item_ids": [moved]})
    assert moved not in shape(r.json(), Person)["item_ids"]
    # a and b are different people: never suggested together
    r = client.post(f"/people/{a['id']}/different", json={"other": b["id"]})
    assert shape(r.json(), Different) == {"person_id": a["id"], "other_id": b["id"]}
    for s in client.get("/people/suggestions?limit=50").json():
        shape(s, MergeSuggestion)
        assert {s["person_id"], s["other_id"]} != {a["id"], b["id"]}
    assert isinstance(client.get(f"/people/suggestions?person={a['id']}").json(), list)
    for g in client.get("/review/groups").json():
        shape(g, ReviewGroup)
    # cover face, a new person from faces
    c = people[2]
    r = client.put(f"/people/{c['id']}/cover", json={"item_id": c["item_ids"][1]})
    assert shape(r.json(), Person)["cover_item_id"] == c["item_ids"][1]
    r = client.post("/people", json={"item_ids": [c["item_ids"][0]], "name": "Solo"})
    assert r.status_code == 201 and r.json()["item_ids"] == [c["item_ids"][0]]
    # unknown people and bad values
    error(client.get("/people/nobody"), 404, "no person 'nobody'")
    error(client.patch("/people/999999", json={"name": "x"}), 404, "999999")
    error(client.post(f"/people/{c['id']}/merge", json={"others": ["ghost"]}), 404, "ghost")
    error(client.post(f"/people/{c['id']}/split", json={"item_ids": [b["item_ids"][-1]]}), 422,
          "do not belong")
    error(client.post(f"/people/{c['id']}/confirm", json={"item_ids": [987654321]}), 422,
          "987654321")


def test_items_thumbnails_and_photos(served):
    _server, client, _root = served
    person = client.get("/people").json()[0]
    item_id = person["item_ids"][0]
    info = shape(client.get(f"/items/{item_id}").json(), ItemInfo)
    assert info["person_id"] == person["id"] and info["kind"] == "image"
    r = client.get(f"/items/{item_id}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (128, 128)
    assert Image.open(io.BytesIO(client.get(f"/items/{item_id}/thumbnail?size=48").content)).size == (48, 48)
    r = client.get(f"/items/{item_id}/photo?size=200")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "JPEG"
    assert client.get(f"/photos/{info['image_id']}").status_code == 200
    error(client.get(f"/items/{item_id}/thumbnail?size=5000"), 422, "size")
    error(client.get("/items/987654321"), 404, "no item 987654321")
    error(client.get("/items/987654321/thumbnail"), 404, "no item")
    error(client.get("/photos/987654321"), 404, "no photo")
    error(client.get("/items/abc"), 422, "item_id")
    error(client.get("/no/such/route"), 404, "no such route")


def test_index_job_errors(served):
    _server, client, root = served
    error(client.post("/jobs/index", json={"folder": "/etc"}), 403, "outside")
    error(client.post("/jobs/index", json={"folder": "../"}), 403, "outside")
    error(client.post("/jobs/index", json={"folder": "set1/../../.."}), 403, "outside")
    error(client.post("/jobs/index", json={"folder": "missing"}), 404, "does not exist")
    error(client.post("/jobs/index", json={"folder": "set1", "model": "nope"}), 422, "Unknown model")
    error(client.post("/jobs/index", json={"folder": "set1", "model": "onnx:/tmp/m.onnx"}), 422,
          "onnx")
    error(client.post("/jobs/index", content=b"folder=set1",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "JSON")
    error(client.post("/jobs/cluster", json={"profile": "fast"}), 422, "profile")
    error(client.get("/jobs/4242"), 404, "no job 4242")
    error(client.post("/jobs/4242/cancel"), 404, "no job 4242")
    done = client.get("/jobs").json()[-1]
    error(client.post(f"/jobs/{done['id']}/cancel"), 409, "nothing to cancel")
    for j in client.get("/jobs").json():
        shape(j, Job)


def test_client_disconnecting_mid_upload(served):
    server, client, root = served
    jpeg = (root / "set1" / "person0" / "img0.jpg").read_bytes()
    for declared in (500_000, 900_000, 2_000_000):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % declared)
            s.sendall(jpeg[:2000])
        # closed with most of the body unsent
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data;"
                  b" boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n--xyz\r\n")
    assert server.alive()
    r = client.post("/search", files={"image": ("q.jpg", jpeg)})
    assert r.status_code == 200 and r.json()[0]["hits"]


def test_not_a_face_and_forget_remove_vectors(served):
    """Last of the module: forgetting deletes a person's items and vectors (as the CLI does), so
    search never returns them again."""
    server, client, root = served
    before = client.get("/library").json()
    person = next(p for p in client.get("/people").json() if p["size"] >= 4)
    gone = set(person["item_ids"])
    drop = person["item_ids"][-1]
    assert shape(client.post("/items/not-a-face", json={"item_ids": [drop]}).json(), NotAFace) == \
        {"removed": 1}
    error(client.get(f"/items/{drop}"), 404, "no item")
    r = client.delete(f"/people/{person['id']}")
    assert r.status_code == 200, r.text
    assert shape(r.json(), Forgotten)["items_removed"] == len(gone) - 1
    error(client.get(f"/people/{person['id']}"), 404, "no person")
    for item_id in gone:
        error(client.get(f"/items/{item_id}/thumbnail"), 404, "no item")
    after = client.get("/library").json()
    assert after["items"] == before["items"] - len(gone)
    for folder in sorted((root / "set1").iterdir()):
        photo = next(folder.iterdir())
        hits = client.post("/search?k=20", files={"image": ("q", photo.read_bytes())}).json()[0]["hits"]
        assert not gone & {h["item_id"] for h in hits}
    error(client.delete(f"/people/{person['id']}"), 404, "no person")


# -- jobs: lifecycle, cancel and resume, a killed worker --------------------------------------------
@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory):
    """A server whose model takes 0.1 s per batch of 8, over a small indexed and clustered set
    (set A) and a folder of 240 photos (set B) for jobs to work through."""
    base = tmp_path_factory.mktemp("api-jobs")
    root = base / "photos"
    make_person_images(root / "A", n_people=2, per_person=4, seed=1)
    make_person_images(root / "B", n_people=24, per_person=10, seed=2)
    server = Server(base / "lib", roots=(root,), model="slowfake",
                    env={"PEOPLEMAP_BATCH_SIZE": "8", "PEOPLEMAP_TEST_SLOW_S": "0.1"}).start()
    client = server.client()
    try:
        run_job(client, "index", {"folder": "A"})
        run_job(client, "cluster", {"min_cluster_size": 2})
        yield server, client, root
    finally:
        client.close()
        server.stop()


def _started_and_progressing(client: httpx.Client, folder: str) -> dict:
    r = client.post("/jobs/index", json={"folder": folder})
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}", r.text
    return wait_job(client, r.json()["id"], 120, until=lambda j: (j["progress"]["done"] or 0) > 0
                    or j["status"] != "running")


def test_job_lifecycle_cancel_keeps_batches_and_resume(jobs_server):
    server, client, root = jobs_server
    items_before = client.get("/library").json()["items"]
    job = _started_and_progressing(client, "B")
    assert job["status"] == "running" and job["progress"]["stage"] == "index"
    assert job["progress"]["total"] == 240
    # Reads are served while the job writes; a second writer is refused with what is running.
    person = client.get("/people").json()[0]
    photo = (root / "A" / "person0" / "img0.jpg").read_bytes()
    assert client.post("/search", files={"image": ("q", photo)}).status_code == 200
    assert client.get(f"/people/{person['id']}").status_code == 200
    error(client.post("/jobs/index", json={"folder": "A"}), 409, f"index job {job['id']}")
    error(client.post("/jobs/cluster", json={}), 409, "busy")
    error(client.delete(f"/people/{person['id']}"), 409, "busy")
    # Cancel: it stops between batches and keeps what it committed.
    r = client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] in ("cancelling", "cancelled")
    ended = wait_job(client, job["id"])
    assert ended["status"] == "cancelled", ended
    assert "kept" in ended["error"] and ended["progress"]["done"] < 240
    committed = client.get("/library").json()["items"] - items_before
    # (progress counts files as their work comes back and the API reports it at intervals, so the
    # last figure and the committed count differ by up to a batch either way)
    assert committed < 240 and ended["progress"]["done"] < 240
    error(client.post(f"/jobs/{job['id']}/cancel"), 409, "nothing to cancel")
    # A later index resumes: committed files are not redone.
    again = run_job(client, "index", {"folder": "B"})
    assert again["result"]["unchanged"] == committed
    assert again["result"]["new"] == 240 - committed
    assert client.get("/library").json()["items"] == items_before + 240
    listed = client.get("/jobs").json()
    assert [j["id"] for j in listed][:2] == [again["id"], job["id"]]


def test_killed_worker_fails_its_job_and_the_server_goes_on(jobs_server):
    server, client, root = jobs_server
    (root / "C").mkdir()
    make_person_images(root / "C", n_people=12, per_person=10, seed=3)
    job = _started_and_progressing(client, "C")
    assert job["status"] == "running"
    os.kill(job["pid"], signal.SIGKILL)
    ended = wait_job(client, job["id"])
    assert ended["status"] == "failed" and "SIGKILL" in ended["error"], ended
    assert server.alive()
    assert client.get("/people").status_code == 200
    again = run_job(client, "index", {"folder": "C"})  # the lock went with the worker
    assert again["result"]["new"] + again["result"]["unchanged"] == 120


def test_job_refused_for_symlinks_leading_out_of_the_roots(jobs_server, tmp_path):
    _server, client, root = jobs_server
    outside = tmp_path / "secret"
    make_person_images(outside, n_people=1, per_person=2)
    trap = root / "trap"
    trap.mkdir()
    (trap / "inner").symlink_to(outside)
    (root / "door").symlink_to(outside)
    error(client.post("/jobs/index", json={"folder": "door"}), 403, "outside")
    r = client.post("/jobs/index", json={"folder": "trap"})
    assert r.status_code == 202
    ended = wait_job(client, r.json()["id"])
    assert ended["status"] == "failed" and ended["error_status"] == 403
    assert "symlinks leading outside" in ended["error"]
    assert str(outside) not in json.dumps(client.get("/library").json()["models"])


def test_stopping_the_server_cancels_its_jobs(tmp_path):
    """Ctrl-C / SIGTERM: running jobs stop between batches (their batches kept), no worker is
    left behind, and the library records why."""
    from peoplemap import Library

    make_person_images(tmp_path / "photos" / "B", n_people=12, per_person=10)
    server = Server(tmp_path / "lib", roots=(tmp_path / "photos",), model="slowfake",
                    env={"PEOPLEMAP_BATCH_SIZE": "8", "PEOPLEMAP_TEST_SLOW_S": "0.2"}).start()
    with server.client() as client:
        job = _started_and_progressing(client, "B")
    server.stop()
    assert server.proc.returncode == 0
    wait_until(lambda: not os.path.exists(f"/proc/{job['pid']}") or
               open(f"/proc/{job['pid']}/stat").read().split()[2] == "Z", 30, "the worker to end")
    with Library.open(tmp_path / "lib") as lib:
        run = lib.runs(limit=1)[0]
        assert run.kind == "index" and run.status == "failed"
        assert "server is stopping" in run.summary["error"]
        assert 0 < lib.info().items < 120


# -- the real face model -----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_face_model_on_dlib_johns(tmp_path):
    johns = shared_set("dlib_johns")
    server = Server(tmp_path / "lib", roots=(johns,), model="face").start()
    try:
        with server.client() as client:
            job = run_job(client, "index", {"folder": "John_Simm"}, deadline_s=600)
            assert job["result"]["items_added"] >= 8
            query = sorted((johns / "John_Simm").iterdir())[0]
            results = client.post("/search?k=3", files={"image": (query.name, query.read_bytes())})
            assert results.status_code == 200, results.text
            faces = TypeAdapter(list[QueryResultOut]).validate_python(results.json())
            assert faces and all(f.box is not None for f in faces)
            best = min((f for f in faces), key=lambda f: f.hits[0].distance)
            assert best.hits[0].path == str(query) and best.hits[0].distance < 0.05
            thumb = client.get(f"/items/{best.hits[0].item_id}/thumbnail")
            assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
            photo = client.get(f"/items/{best.hits[0].item_id}/photo?size=400")
            assert photo.status_code == 200
            assert max(Image.open(io.BytesIO(photo.content)).size) <= 400
            info = client.get("/library").json()
            assert info["models"][0]["model"] == "face"
    finally:
        server.stop()


def test_a_taken_name_asks_instead_of_making_two(served):
    """Naming a second person with a name another has: 409 with who has it; on_duplicate decides."""
    _server, client, _root = served
    people = client.get("/people?include_hidden=true").json()
    assert len(people) >= 2
    a, b = people[-2]["id"], people[-1]["id"]
    assert client.patch(f"/people/{a}", json={"name": "Twin Name"}).status_code == 200
    r = client.patch(f"/people/{b}", json={"name": "Twin Name"})
    assert r.status_code == 409 and r.json()["others"] == [a] and "Twin Name" in r.json()["message"]
    r = client.patch(f"/people/{b}", json={"name": "Twin Name", "on_duplicate": "keep_apart"})
    assert r.status_code == 200 and r.json()["name"] not in (None, "Twin Name")
    assert client.patch(f"/people/{b}", json={"name": "x", "on_duplicate": "maybe"}).status_code == 422
