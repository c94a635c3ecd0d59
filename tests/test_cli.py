"""The CLI contract: every verb has help with an example; errors are `Error: ...` with exit 1;
index / cluster / search --json / export / info work end to end (fake model, generated images)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

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
    r = CliRunner().invoke(main, ["index", str(tmp_path / "nofolder"), "--library", str(tmp_path / "l"),
                                  "--model", "nope"])
    assert r.exit_code == 1 and "Unknown model: 'nope'" in r.output and "mobilenetv2" in r.output


def test_end_to_end_contract(tmp_path, photos):
    lib = str(tmp_path / "lib")
    run = CliRunner().invoke
    r = run(main, ["index", str(photos), "--library", lib, "--model", "fake"])
    assert r.exit_code == 0, r.output
    assert "20 new" in r.output
    r = run(main, ["cluster", "--library", lib, "--min-cluster-size", "3"])
    assert r.exit_code == 0 and "4 clusters" in r.output, r.output
    q1, q2 = str(photos / "person1" / "img0.jpg"), str(photos / "person3" / "img1.png")
    r = run(main, ["search", q1, q2, "--library", lib, "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
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
    info = json.loads(r.output)
    assert info["images"] == 20 and info["models"][0]["model"] == "fake"
    assert info["models"][0]["clustering"]["clusters"] == 4
