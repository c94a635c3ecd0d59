"""The CLI contract: every verb has help with an example; errors are `Error: ...` with exit 1;
index / cluster / search --json / export / info work end to end (fake model, generated images)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import peoplemap.cli
from peoplemap.cli import main


def _commands():
    """Every command path, sub-commands of groups included: ["index"], ["people", "name"], ..."""
    import click

    out = []
    for name, cmd in sorted(main.commands.items()):
        out.append([name])
        if isinstance(cmd, click.Group):
            out.extend([name, sub] for sub in sorted(cmd.commands))
    return out


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example:" in r.output and f"peoplemap {' '.join(path)}" in r.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, peoplemap.cli; "
            "heavy = {'torch','onnxruntime','faiss','streamlit','hdbscan','sklearn','dlib'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_are_one_line_with_exit_1(tmp_path):
    r = CliRunner().invoke(main, ["cluster", "--library", str(tmp_path / "missing")])
    assert r.exit_code == 1
    assert r.output.startswith("Error: no peoplemap library")
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["index", str(tmp_path), "--library", str(tmp_path / "l"),
                                  "--model", "nope"])
    assert r.exit_code == 1 and "Unknown model: 'nope'" in r.output and "mobilenetv2" in r.output


def test_end_to_end_contract(tmp_path, photos):
    lib = str(tmp_path / "lib")
    run = CliRunner().invoke
    r = run(main, ["index", str(photos), "--library", lib, "--model", "fake"])
    assert r.exit_code == 0, r.output
    assert "20 new" in r.output
    r = run(main, ["cluster", "--library", lib, "--min-cluster-size", "3"])
    assert r.exit_code == 0 and "into 4 people" in r.output, r.output
    q1, q2 = str(photos / "person1" / "img0.jpg"), str(photos / "person3" / "img1.png")
    r = run(main, ["search", q1, q2, "--library", lib, "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["query"] for d in data] == [q1, q2]
    for d in data:
        assert set(d) >= {"query", "cluster", "hits"}
        assert len(d["hits"]) == 3
        assert set(d["hits"][0]) >= {"path", "item_id", "box", "distance", "cluster"}
        dists = [h["distance"] for h in d["hits"]]
        assert dists == sorted(dists)
        assert d["hits"][0]["path"] == d["query"] and d["cluster"] == d["hits"][0]["cluster"]
    out = tmp_path / "export.csv"
    r = run(main, ["export", "--library", lib, "--format", "csv", "--out", str(out)])
    assert r.exit_code == 0 and out.read_text().splitlines()[0].startswith("item_id,path,box,cluster,person_name")
    r = run(main, ["info", "--library", lib, "--json"])
    info = json.loads(r.stdout)
    assert info["images"] == 20 and info["models"][0]["model"] == "fake"
    assert info["models"][0]["clustering"]["clusters"] == 4


def test_json_output_is_the_library_responses_one_json_form(tmp_path, photos):
    """`--json` prints the same objects the Library API returns, in their one JSON form, so the CLI,
    the app and any other front end agree; the keys scripts already read are kept."""
    from peoplemap import Library
    from peoplemap.responses import ClusterSummary, jsonable

    lib_dir = str(tmp_path / "lib")
    run = CliRunner().invoke
    r = run(main, ["index", str(photos), "--library", lib_dir, "--model", "fake", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["new"] == 20  # progress lines go to stderr
    r = run(main, ["cluster", "--library", lib_dir, "--min-cluster-size", "3", "--json"])
    assert r.exit_code == 0, r.output
    clustered = json.loads(r.stdout)
    assert clustered == jsonable(ClusterSummary(**clustered))
    assert clustered["n_clusters"] == 4 and clustered["model"] == "fake"
    with Library.open(lib_dir) as lib:
        again = jsonable(lib.cluster(min_cluster_size=3))
    assert {k: v for k, v in again.items() if k != "seconds"} == \
        {k: v for k, v in clustered.items() if k != "seconds"}
    assert run(main, ["people", "name", "1", "Ada", "--library", lib_dir]).exit_code == 0

    r = run(main, ["people", "list", "--library", lib_dir, "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    r = run(main, ["info", "--library", lib_dir, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    with Library.open(lib_dir) as lib:
        assert listed == jsonable(lib.people()) == [p.to_json() for p in lib.people()]
        assert info == jsonable(lib.info()) == lib.info().to_json()
    assert len(listed) == 4 and any(p["name"] == "Ada" for p in listed)
    assert all(set(p) == {"id", "name", "hidden", "size", "item_ids", "cover_item_id"} for p in listed)
    assert set(info) >= {"library", "images", "items", "skipped", "models", "last_runs"}
    assert info["items"] == 20 and info["models"][0]["clustering"]["clusters"] == 4
    assert [r["kind"] for r in info["last_runs"][:3]] == ["cluster", "cluster", "index"]


CLI_PACKAGE = Path(peoplemap.cli.__file__).parent
SRC = CLI_PACKAGE.parent


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module the import is from, relative to peoplemap when inside it, name, line) of each
    `from X import name` in a file; `import X` counts as the name "" of module X."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.extend((module, a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, "", node.lineno) for a in node.names)
    return out


def test_cli_package_has_no_import_cycle():
    """Command modules import only `peoplemap.cli.common` of the CLI (the package imports them to
    register their commands), and each imports on its own, as does `python -m peoplemap.cli`."""
    modules = sorted(p for p in CLI_PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert {p.stem for p in modules} >= {"common", "index", "people", "eval"}
    for path in modules:
        for module, name, line in _imports(path):
            full = f"{module}.{name}" if name else module
            if module == "peoplemap.cli" or full.startswith("peoplemap.cli."):
                assert full == "peoplemap.cli.common" or module == "peoplemap.cli.common", \
                    f"{path.name}:{line} imports {full}; command modules import only cli.common"
    for path in modules:
        subprocess.run([sys.executable, "-c", f"import peoplemap.cli.{path.stem}"], check=True)
    out = subprocess.run([sys.executable, "-m", "peoplemap.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("Usage: peoplemap") and "people" in out and "eval" in out


PRIVATE_IMPORTS_ALLOWED = {
    # hdbscan has no public function that turns a condensed tree into labels; graph_hdbscan
    # builds its own tree from a kNN graph and needs exactly that step.
    ("hdbscan.hdbscan_", "_tree_to_labels"),
}


def test_no_module_imports_a_private_name_of_another():
    """A name with a leading underscore is private to its module: what another module needs is
    public. Third-party private names are allowed only where listed above, with the reason."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for module, name, line in _imports(path):
            private = name.startswith("_") and not name.startswith("__")
            if private and (module, name) not in PRIVATE_IMPORTS_ALLOWED:
                found.append(f"{path.relative_to(SRC.parent)}:{line}: from {module} import {name}")
    assert not found, "private names imported from another module:\n" + "\n".join(found)
