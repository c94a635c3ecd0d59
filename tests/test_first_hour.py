"""The first hour with peoplemap (issue 15), from the command line and the Python API.

Each test is one of the betrayals a new user met, checked as the user met it:
- 2: a name someone already has is never silently given twice (API error, CLI flags and prompt,
  folder export keeps two same-named people apart);
- 5: progress off a terminal: a line on stderr every few seconds, with the rate and time left;
- 6: a bad folder creates nothing; every user error is `Error: ...` with exit code 1;
- 7: stopping `peoplemap ui` (SIGINT, SIGTERM, SIGKILL of it, its parent dying) stops the server:
  its port is free within 5 s and no child process is left (real processes);
- 8: the README's Python example runs as written, as a plain script, on real faces; the "library
  is busy" error says what really happened;
- 10: exporting folders into an earlier export updates it; other non-empty folders are refused.
"""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_person_images, shared_set
from peoplemap.cli import main
from peoplemap.cli.common import ProgressLines
from peoplemap.errors import InputError, LibraryBusyError, NameTakenError
from peoplemap.library import Library

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def grouped(tmp_path: Path, photos: Path) -> Path:
    """A library of 4 people of 5 generated photos each (fake whole-image model)."""
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True) as lib:
        lib.index(photos, model="fake")
        lib.cluster(model="fake", min_cluster_size=3)
        assert [p.size for p in lib.people()] == [5, 5, 5, 5]
    return lib_dir


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


# -- 1 and 2: one name for a person ---------------------------------------------------------------
def test_people_are_named_or_person_n_in_the_cli(grouped: Path) -> None:
    with Library.open(grouped) as lib:
        ids = [p.id for p in lib.people()]
    r = _run("people", "list", "--library", str(grouped))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"Person {i}: 5 photos" for i in ids]
    assert "cluster" not in r.stdout.lower()
    r = _run("people", "name", f"Person {ids[0]}", "Ada", "--library", str(grouped))
    assert r.exit_code == 0 and r.stdout.strip() == f"Ada (Person {ids[0]}): 5 photos", r.output
    r = _run("search", str(next(iter(sorted(Path(lib.path.parent / "photos").rglob("*.jpg"))))),
             "--library", str(grouped), "-k", "2")
    assert r.exit_code == 0, r.output
    assert "cluster" not in r.stdout.lower() and ("Ada" in r.stdout or "Person" in r.stdout)


def test_a_taken_name_is_never_given_twice_by_the_api(grouped: Path, tmp_path: Path) -> None:
    with Library.open(grouped) as lib:
        a, b, c, d = lib.people()
        lib.name_person(a.id, "Actress A")
        with pytest.raises(NameTakenError, match="already the name of Person") as e:
            lib.name_person(b.id, "  actress   a ")  # the same name, typed differently
        assert [o.id for o in e.value.others] == [a.id]
        assert lib.person(b.id).name is None  # nothing changed
        with pytest.raises(NameTakenError):
            lib.split_person(c.id, c.item_ids[:2], name="Actress A")
        kept = lib.name_person(b.id, "Actress A", on_duplicate="keep_apart")
        assert kept.name == "Actress A (2)"
        assert (min(a.id, b.id), max(a.id, b.id)) in lib.store.people.different(lib.vector_set().id)
        merged = lib.name_person(c.id, "Actress A", on_duplicate="merge")
        assert merged.id == a.id and merged.name == "Actress A" and merged.size == 10
        assert lib.person("Actress A").id == a.id  # the CLI's name lookup is never ambiguous
        with pytest.raises(InputError, match="on_duplicate must be one of"):
            lib.name_person(d.id, "X", on_duplicate="sure")


def test_a_taken_name_in_the_cli_asks_or_takes_a_flag(grouped: Path) -> None:
    lib_arg = ["--library", str(grouped)]
    with Library.open(grouped) as lib:
        a, b, c, _d = (p.id for p in lib.people())
    assert _run("people", "name", str(a), "Ada", *lib_arg).exit_code == 0
    r = _run("people", "name", str(b), "Ada", *lib_arg)  # no terminal to ask on: say how to answer
    assert r.exit_code == 1 and r.output.startswith("Error: 'Ada' is already the name of Ada")
    assert "--merge" in r.output and "--keep-apart" in r.output
    r = _run("people", "name", str(b), "Ada", "--keep-apart", *lib_arg)
    assert r.exit_code == 0 and r.stdout.strip() == f"Ada (2) (Person {b}): 5 photos", r.output
    r = _run("people", "name", str(c), "ada", "--merge", *lib_arg)
    assert r.exit_code == 0 and r.stdout.strip() == f"Ada (Person {a}): 10 photos", r.output
    with Library.open(grouped) as lib:
        names = sorted(p.name or "" for p in lib.people())
    assert names == ["", "Ada", "Ada (2)"]


def test_the_cli_asks_at_a_terminal(grouped: Path) -> None:
    with Library.open(grouped) as lib:
        a, b, *_ = (p.id for p in lib.people())
        lib.name_person(a, "Ada")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "peoplemap.cli", "people", "name", str(b), "Ada",
                             "--library", str(grouped)], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    os.close(slave)
    try:
        os.write(master, b"m\n")
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, out
    assert "'Ada' is already the name of Ada" in out and "same person?" in out
    assert f"Merged Person {b} into Ada." in out
    with Library.open(grouped) as lib:
        assert [(p.name, p.size) for p in lib.people()][:1] == [("Ada", 10)]


def test_two_people_of_one_name_export_to_two_folders(grouped: Path, tmp_path: Path) -> None:
    """A library from before names were checked may hold two people of one name: their faces are
    never merged into one folder."""
    with Library.open(grouped) as lib:
        a, b, *_ = lib.people()
        lib.store.people.rename(a.id, "Actress A")  # as an older release allowed
        lib.store.people.rename(b.id, "Actress A")
        out = lib.export("folders", tmp_path / "out")
    folders = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert f"Actress A (Person {a.id})" in folders and f"Actress A (Person {b.id})" in folders
    assert all(len(list((out / f).iterdir())) == 5 for f in folders)


# -- 5: progress --------------------------------------------------------------------------------
def test_progress_lines_have_count_rate_and_time_left() -> None:
    lines: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            lines.extend(x for x in s.splitlines() if x)

        def flush(self) -> None:
            pass

    now = [0.0]
    progress = ProgressLines(every=5.0, out=Out(), clock=lambda: now[0])
    progress("index", 0, 100)
    for done in range(1, 101):  # a file every 0.5 s: a line every 5 s, and the last one
        now[0] += 0.5
        progress("index", done, 100)
    assert lines[0] == "Indexing: 0/100 files (0%)"
    assert lines[1] == "Indexing: 10/100 files (10%), 2.0 files/s, about 45 s left"
    assert len(lines) == 1 + 10
    assert lines[-1] == "Indexing: 100/100 files (100%), 2.0 files/s, done in 50 s"


SLOW_MODEL = """import sys, time
sys.path.insert(0, {tests!r})
from conftest import FakeEmbedder
from peoplemap.embed.registry import register

@register("slowfake", "test-only: the fake model at 20 photos a second")
class Slow(FakeEmbedder):
    name = "slowfake"
    def embed(self, crops):
        time.sleep(0.05 * len(crops))
        return super().embed(crops)

from peoplemap.cli import main
main()
"""


def test_progress_off_a_terminal_is_printed_every_few_seconds(tmp_path: Path) -> None:
    make_person_images(tmp_path / "photos", n_people=8, per_person=10)
    script = tmp_path / "peoplemap_slow.py"
    script.write_text(SLOW_MODEL.format(tests=str(TESTS)))
    env = {**os.environ, "PEOPLEMAP_PROGRESS_EVERY": "0.5", "PEOPLEMAP_BATCH_SIZE": "4"}
    r = subprocess.run([sys.executable, str(script), "index", str(tmp_path / "photos"), "--library",
                        str(tmp_path / "lib"), "--model", "slowfake"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("Indexing: ")]
    assert len(lines) >= 4, r.stderr  # 80 photos at ~20 a second, a line every 0.5 s
    assert lines[0] == "Indexing: 0/80 files (0%)"
    middle = [x for x in lines if "left" in x]
    assert middle, lines
    assert all(re.fullmatch(r"Indexing: \d+/80 files \(\d+%\), [\d.]+ files/s, about \d+ s left", x)
               for x in middle), middle
    assert re.fullmatch(r"Indexing: 80/80 files \(100%\), [\d.]+ files/s, done in \d+ s", lines[-1])
    assert "Indexed" in r.stdout and "80 photos added" in r.stdout


def test_progress_in_a_terminal_is_a_bar_with_rate_and_time_left(tmp_path: Path) -> None:
    import fcntl
    import struct
    import termios

    make_person_images(tmp_path / "photos", n_people=4, per_person=10)
    script = tmp_path / "peoplemap_slow.py"
    script.write_text(SLOW_MODEL.format(tests=str(TESTS)))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script), "index", str(tmp_path / "photos"),
                             "--library", str(tmp_path / "lib"), "--model", "slowfake"],
                            stdout=slave, stderr=slave, env={**os.environ, "PEOPLEMAP_BATCH_SIZE": "4"})
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    frames = out.decode(errors="replace").split("\r")
    bars = [f for f in frames if f.startswith("Indexing:")]
    assert len(bars) >= 4, frames  # it moves as files are done, from the start
    assert re.search(r"\| \d+/40 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ files/s\]", bars[len(bars) // 2]), bars


# -- 6: errors and exit codes ----------------------------------------------------------------------
def test_a_bad_folder_creates_nothing(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    r = _run("index", str(tmp_path / "no-such-folder"), "--library", str(lib))
    assert r.exit_code == 1 and r.output.startswith("Error: the folder ") and "does not exist" in r.output
    assert not lib.exists()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not really")
    r = _run("index", str(photo), "--library", str(lib))
    assert r.exit_code == 1, r.output
    assert r.output == f"Error: {str(photo)!r} is a file, not a folder of photos\n"
    assert not lib.exists()

    # An existing library: no lock file, no failed run (through the CLI and the API).
    Library.open(lib, create=True).close()
    before = sorted(p.name for p in lib.iterdir())
    r = _run("index", str(tmp_path / "no-such-folder"), "--library", str(lib))
    assert r.exit_code == 1
    with Library.open(lib) as opened:
        with pytest.raises(InputError, match="does not exist"):
            opened.index(tmp_path / "no-such-folder", model="fake")
        assert opened.runs() == []
    assert sorted(p.name for p in lib.iterdir()) == before
    assert not (lib / "writer.lock").exists()


@pytest.mark.parametrize("args", [
    pytest.param(["index"], id="missing-argument"),
    pytest.param(["search", "--library", "x"], id="missing-query"),
    pytest.param(["cluster", "--library", "x", "--profile", "best"], id="bad-choice"),
    pytest.param(["search", "q.jpg", "--library", "x", "-k", "0"], id="bad-number"),
    pytest.param(["people", "name", "1", "--library", "x"], id="subcommand-missing-argument"),
    pytest.param(["nonsense"], id="unknown-command"),
])
def test_every_user_error_is_error_exit_1(args: list[str]) -> None:
    r = _run(*args)
    assert r.exit_code == 1, r.output
    assert "Error: " in r.output and "Traceback" not in r.output


def test_a_path_that_cannot_be_written_is_error_exit_1(grouped: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    r = _run("export", "--library", str(grouped), "--format", "csv", "--out",
             str(tmp_path / "a-file" / "x.csv"))
    assert r.exit_code == 1 and r.output.startswith("Error: Not a directory"), r.output
    assert "Traceback" not in r.output


# -- 7: no orphan server -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out | {g for c in out for g in _children(c)}


def _wait_serving(port: int, proc: subprocess.Popen, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        if _serving(port):
            return
        time.sleep(0.2)
    pytest.fail(f"the app did not start serving on port {port}")


UI_PARENT = """import subprocess, sys
p = subprocess.Popen(sys.argv[1:])
print(p.pid, flush=True)
p.wait()
"""


def _as_from_a_terminal() -> None:
    """Ctrl-C and hang-up as a terminal delivers them: a test run started in the background
    (`nohup make test &`) would otherwise pass on SIGINT and SIGHUP ignored, and `peoplemap ui`
    rightly keeps serving under nohup."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL", "parent-dies"])
def test_stopping_peoplemap_ui_stops_its_server(how: str, tmp_path: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "peoplemap.cli", "ui", "--library", str(tmp_path / "lib"),
           "--port", str(port), "--address", "127.0.0.1"]
    log = open(tmp_path / "ui.log", "w+")
    if how == "parent-dies":
        parent = subprocess.Popen([sys.executable, "-c", UI_PARENT, *cmd], stdout=subprocess.PIPE,
                                  stderr=log, text=True, preexec_fn=_as_from_a_terminal)
        ui = int(parent.stdout.readline())
        watched = parent
    else:
        parent = None
        watched = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_as_from_a_terminal)
        ui = watched.pid
    try:
        _wait_serving(port, watched)
        started = _children(ui)
        assert started, "peoplemap ui started no server process"
        everything = started | {ui}
        if how == "parent-dies":
            parent.kill()
        else:
            os.kill(ui, getattr(signal, how))
        stopped = time.monotonic()
        while time.monotonic() - stopped < 5 and (_serving(port) or any(map(_alive, everything))):
            time.sleep(0.1)
        took = time.monotonic() - stopped
        log.seek(0)
        assert not _serving(port), f"still serving {took:.1f} s after {how}:\n{log.read()}"
        assert not [p for p in everything if _alive(p)], f"left running after {how}:\n{log.read()}"
        with socket.socket() as s:  # and the port can be taken again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        for p in [watched, parent]:
            if p is not None and p.poll() is None:
                p.kill()
        for pid in _children(ui) | {ui}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        log.close()


# -- 8: the README's example, and what "busy" means -----------------------------------------------
def _readme_python() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    """A plain script (no `if __name__ == "__main__":`), the default face model, ~/Pictures and
    me.jpg where the example expects them: 24 real face photos, enough for worker processes."""
    code = _readme_python()
    assert "__main__" not in code and 'lib.index("~/Pictures"' in code
    home, work = tmp_path / "home", tmp_path / "work"
    pictures = home / "Pictures"
    pictures.mkdir(parents=True)
    work.mkdir()
    people = sorted(p for p in shared_set("dlib_johns").iterdir() if p.is_dir() and not p.name.startswith("_"))
    for person in people[:3]:
        (pictures / person.name).mkdir()
        for photo in sorted(person.iterdir())[:8]:
            (pictures / person.name / photo.name).symlink_to(photo)
    (work / "me.jpg").symlink_to(sorted(people[0].iterdir())[9])
    (work / "example.py").write_text(code)
    env = {**os.environ, "HOME": str(home), "PEOPLEMAP_WORKERS": "2"}
    r = subprocess.run([sys.executable, "example.py"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "busy" not in r.stderr and "Traceback" not in r.stderr
    assert "if __name__" in r.stderr  # it says why it used one process, and how to use all
    assert re.search(r"^index 24 24$", r.stdout, re.M), r.stdout
    export = work / "by-person"
    assert (export / "Ada").is_dir() and (export / ".peoplemap-export.json").is_file()
    with Library.open(work / "people.lib") as lib:
        assert lib.person("Ada").size >= 2


def test_busy_says_when_it_is_this_process(library) -> None:
    library.index(Path(__file__).parent / "fixtures", model="fake")
    with library.writing("peoplemap index photos"):
        with pytest.raises(LibraryBusyError, match="That is this same process"):
            library.cluster(min_cluster_size=2)


def _try_to_write(path: str, queue) -> None:
    from peoplemap.library import Library

    try:
        with Library.open(path) as lib:
            with lib.writing("child"):
                queue.put("wrote")
    except Exception as e:  # noqa: BLE001 (the message is what is checked)
        queue.put(str(e))


def test_busy_says_when_the_writer_started_this_process(library) -> None:
    """What a worker process that re-ran an unguarded script used to see: "busy", with its own
    parent's pid. Now it says that it is that process's worker and what to do."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with library.writing("peoplemap index ~/Pictures"):
        child = ctx.Process(target=_try_to_write, args=(str(library.path), queue))
        child.start()
        message = queue.get(timeout=120)
        child.join(timeout=60)
    assert f"(pid {os.getpid()})" in message
    assert "the process that started this one" in message and 'if __name__ == "__main__":' in message


GUARD_PROBE = """import sys
sys.path.insert(0, {src!r})
from peoplemap.mainguard import caller_rerun_by_workers

def check():
    return caller_rerun_by_workers()

{body}
"""


@pytest.mark.parametrize("body, rerun", [
    pytest.param("print(check())", True, id="top-level"),
    pytest.param("def main():\n    print(check())\n\nmain()", True, id="unguarded-main"),
    pytest.param("if __name__ == '__main__':\n    print(check())", False, id="guarded"),
    pytest.param("def main():\n    print(check())\n\nif '__main__' == __name__:\n    main()", False,
                 id="guarded-main"),
])
def test_workers_would_rerun_an_unguarded_script(tmp_path: Path, body: str, rerun: bool) -> None:
    script = tmp_path / "script.py"
    script.write_text(GUARD_PROBE.format(src=str(REPO / "src"), body=body))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(rerun)
    out = subprocess.run([sys.executable, "-c", "from peoplemap.mainguard import "
                          "caller_rerun_by_workers as c; print(c())"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"  # nothing to re-run


# -- 10: exporting again updates the export -------------------------------------------------------
def test_export_again_into_the_same_folder_updates_it(grouped: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-person"
    lib_arg = ["--library", str(grouped)]
    r = _run("export", *lib_arg, "--format", "folders", "--out", str(out))
    assert r.exit_code == 0, r.output
    with Library.open(grouped) as lib:
        a, b, c, d = lib.people()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        f"Person {p.id}" for p in (a, b, c, d))
    (out / f"Person {d.id}" / "my-notes.txt").write_text("mine")  # the user's own file
    manifest = json.loads((out / ".peoplemap-export.json").read_text())
    assert len(manifest["links"]) == 20

    assert _run("people", "name", str(a.id), "Ada", *lib_arg).exit_code == 0
    assert _run("people", "merge", "Ada", str(b.id), *lib_arg).exit_code == 0
    assert _run("people", "split", str(d.id), str(d.item_ids[0]), "--name", "Dee", *lib_arg).exit_code == 0
    r = _run("export", *lib_arg, "--format", "folders", "--out", str(out))
    assert r.exit_code == 0, r.output
    folders = {p.name: sorted(x.name for x in p.iterdir()) for p in out.iterdir() if p.is_dir()}
    assert set(folders) == {"Ada", f"Person {c.id}", f"Person {d.id}", "Dee"}  # no Person a, b
    assert len(folders["Ada"]) == 10 and len(folders["Dee"]) == 1
    assert "my-notes.txt" in folders[f"Person {d.id}"]  # kept, and the moved face is gone
    assert len([x for x in folders[f"Person {d.id}"] if x != "my-notes.txt"]) == 4
    links = [p for p in out.rglob("*") if p.is_symlink()]
    assert len(links) == 20 and all(p.resolve().is_file() for p in links)

    # Someone else's folder, or one that is not an export, is still refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("x")
    r = _run("export", *lib_arg, "--format", "folders", "--out", str(other))
    assert r.exit_code == 1 and "not empty and is not an earlier peoplemap export" in r.output


def test_an_edited_manifest_cannot_reach_outside(grouped: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Library.open(grouped) as lib:
        lib.export("folders", out)
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep").symlink_to("/etc/hostname")
        m = out / ".peoplemap-export.json"
        data = json.loads(m.read_text())
        data["links"]["../victim/keep"] = "/etc/hostname"
        data["links"]["x/../../victim/keep"] = "/etc/hostname"
        m.write_text(json.dumps(data))
        lib.export("folders", out)
    assert (victim / "keep").is_symlink()
