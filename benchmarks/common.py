"""Shared helpers for the benchmark scripts: machine description, JSON output, RESULTS.md sections.

Standard library only, so it also imports under the design pipeline's TensorFlow virtualenv.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path
from typing import Any, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _pkg(name: str) -> str | None:
    try:
        return _version(name)
    except PackageNotFoundError:
        return None


def machine(extra_packages: Iterable[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, load, Python and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    packages = {}
    for name in ("numpy", "onnxruntime", "faiss-cpu", "pillow", *extra_packages):
        v = _pkg(name)
        if v is not None:
            packages[name] = v
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": _ram_gib(),
        "load_avg_1_5_15": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": packages,
        "date": now_iso(),
    }


def machine_line(m: dict[str, Any]) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    return (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['ram_gib']} GiB RAM, "
            f"load {m['load_avg_1_5_15']}, Python {m['python']}; {pk}")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded, or None when either is missing or b is zero."""
    if a is None or not b:
        return None
    return round(a / b, 2)


def print_json(data: Any) -> None:
    """One JSON document on stdout (the scripts' machine-readable output)."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table whose columns are the keys of the first row."""
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda v: "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def append_result(title: str, data: dict, command: str, *, table: Sequence[dict] | None = None,
                  notes: str = "", path: Path = RESULTS) -> Path:
    """Append one section to benchmarks/RESULTS.md: heading with date, command, machine, table, JSON."""
    m = data.get("machine") or machine()
    parts = [f"\n## {title} ({m.get('date') or now_iso()})\n",
             f"Reproduce: `{command}`\n",
             f"Machine: {machine_line(m)}\n"]
    if notes:
        parts.append(notes.strip() + "\n")
    if table:
        parts.append(markdown_table(table) + "\n")
    parts.append("<details><summary>full JSON</summary>\n\n```json\n"
                 + json.dumps(data, indent=2, default=str) + "\n```\n</details>\n")
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("# Benchmark results\n\nSections are appended by the scripts in this folder "
                    "(see README.md); newest last.\n")
        f.write("\n".join(parts))
    return path


def image_files(root: str | os.PathLike, limit: int | None = None) -> list[str]:
    """Image files under root in peoplemap's scan order (depth-first, names sorted, hidden skipped)."""
    out: list[str] = []

    def walk(d: str) -> bool:
        with os.scandir(d) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=True):
                if walk(e.path):
                    return True
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                out.append(e.path)
                if limit is not None and len(out) >= limit:
                    return True
        return False

    walk(os.path.abspath(os.fspath(root)))
    return out
