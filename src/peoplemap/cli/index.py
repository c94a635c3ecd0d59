"""`peoplemap index / cluster / search / export / info / models / ui`: the stages of a library."""
from __future__ import annotations

import json
import logging
import sys
from typing import Optional

import click

from .common import library_option, open_library, print_json, progress_bar

JSON_SUMMARY = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


@click.command()
@click.argument("photos_dir", type=click.Path(file_okay=False))
@library_option
@click.option("--model", "-m", default=None,
              help="Embedding model (default: face; PEOPLEMAP_DEFAULT_MODEL to change); "
                   "`peoplemap models` lists them.")
@click.option("--rebuild", is_flag=True, help="Re-extract this model's vectors (after a model change).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where decoding and embedding run: this machine, or a Ray cluster "
                   "(needs the `ray` extra: pip install 'peoplemap[ray]').")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="Ray cluster to join (`ray start --head` prints it); default: RAY_ADDRESS, else "
                   "a Ray started on this machine for the run.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="Model actors on the cluster (default: one per CPU).")
@click.option("--ray-gpus-per-worker", type=click.FloatRange(min=0), default=0.0,
              help="GPUs each Ray model actor reserves, on clusters with GPUs.")
@click.option("--search-index", type=click.Choice(["auto", "ivfpq"]), default="auto", show_default=True,
              help="ivfpq: then build the search index in chunks from the stored vectors (IVF-PQ, "
                   "for millions of items); auto: search builds its index when first needed.")
@JSON_SUMMARY
def index(photos_dir: str, library: str, model: Optional[str], rebuild: bool, engine: str,
          ray_address: Optional[str], ray_workers: Optional[int], ray_gpus_per_worker: float,
          search_index: str, as_json: bool) -> None:
    """Index the images in PHOTOS_DIR (recursively) into a library.

    Only new or changed files are processed on a re-run; deleted files are dropped. Files that
    cannot be read are recorded with the reason and listed in the summary. With --engine ray the
    decoding and embedding run on a Ray cluster (photos at the same path on every node) and the
    library comes out the same as with the default local engine.

    \b
    Example:
      peoplemap index ~/Pictures --library people.lib
      peoplemap index crops/ --library people.lib --model body
      peoplemap index /mnt/photos --library people.lib --engine ray --ray-address 10.0.0.5:6379
    """
    eng: object = engine
    if engine == "ray":
        from ..engine_ray import RayOptions, require_ray

        eng = RayOptions(address=ray_address, workers=ray_workers, gpus_per_worker=ray_gpus_per_worker)
        require_ray()
        # Ray Data prints INFO lines on the console of its own; show them with -v only.
        for h in logging.getLogger("ray.data").handlers:
            if isinstance(h, logging.StreamHandler):  # the console, not Ray's session log file
                h.setLevel(max(h.level, logging.getLogger().getEffectiveLevel()))
    elif ray_address or ray_workers or ray_gpus_per_worker:
        raise click.UsageError("--ray-address, --ray-workers and --ray-gpus-per-worker need --engine ray")
    lib = open_library(library, create=True)
    with progress_bar("") as cb:
        s = lib.index(photos_dir, model=model, rebuild=rebuild, progress=cb, engine=eng)
        if search_index == "ivfpq":
            from ..index_build import build_ivfpq

            built = build_ivfpq(lib, s.model, progress=cb)
            if not as_json:
                click.echo(f"Built an ivfpq search index of {len(built)} items.")
    if as_json:
        print_json(s)
        return
    click.echo(f"Indexed {s.folder} with {s.model} in {s.seconds:.1f}s: {s.files_seen} files, "
               f"{s.new} new, {s.changed} changed, {s.unchanged} unchanged, {s.removed} removed; "
               f"{s.items_added} items added" + (f" ({s.reused} reused identical images)" if s.reused else ""))
    a = s.assignment
    if a is not None and a.new_items:
        click.echo(f"Placed {a.assigned} of {a.new_items} new items with existing people in "
                   f"{a.seconds:.1f}s ({a.unsorted} unsorted); `peoplemap cluster` regroups everything "
                   "and keeps names.")
    if s.images_without_items:
        kind = lib.vector_set(s.model).item_kind
        empty = lib.images_without_items(s.model)
        click.echo(f"{len(empty)} images have no {kind} for this model"
                   + (":" if len(empty) <= 20 else " (`peoplemap info` lists them all):"))
        for p in empty[:20]:
            click.echo(f"  {p!r}")
    if s.skipped:
        click.echo(f"Skipped {len(s.skipped)} files:")
        for sk in s.skipped[:50]:
            click.echo(f"  {sk.path!r}: {sk.reason}")
        if len(s.skipped) > 50:
            click.echo(f"  ... and {len(s.skipped) - 50} more (`peoplemap info` lists them all)")


@click.command()
@library_option
@click.option("--model", "-m", default=None, help="Vector set to cluster (default: the latest indexed).")
@click.option("--profile", type=click.Choice(["default", "seed"]), default="default", show_default=True,
              help="`seed` reproduces the original design: StandardScaler, PCA(50), HDBSCAN(3).")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=None,
              help="Smallest group that counts as a cluster (profile default if not given).")
@JSON_SUMMARY
def cluster(library: str, model: Optional[str], profile: str, min_cluster_size: Optional[int],
            as_json: bool) -> None:
    """Group the library's items into clusters; the rest are "unsorted".

    \b
    Example:
      peoplemap cluster --library people.lib --profile seed --min-cluster-size 3
      peoplemap cluster --library people.lib --json
    """
    lib = open_library(library)
    with progress_bar("") as cb:
        s = lib.cluster(model=model, profile=profile, min_cluster_size=min_cluster_size, progress=cb)
    if as_json:
        print_json(s)
        return
    click.echo(f"Clustered {s.n_items} {s.model} items with profile {s.profile} in {s.seconds:.1f}s: "
               f"{s.n_clusters} clusters, {s.n_noise} unsorted.")


@click.command()
@click.argument("query_images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@library_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of hits per query.")
@click.option("--model", "-m", default=None, help="Vector set to search (default: the latest indexed).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per query.")
def search(query_images: tuple[str, ...], library: str, k: int, model: Optional[str],
           as_json: bool) -> None:
    """Find the items most like each QUERY_IMAGE, and the cluster it belongs to.

    \b
    Example:
      peoplemap search me.jpg friend.png --library people.lib -k 5 --json
    """
    lib = open_library(library)
    out = [r for q in query_images for r in lib.search(q, k=k, model=model)]
    if as_json:
        print_json(out)
        return
    for r in out:
        who = r.person or (f"person {r.person_id}" if r.person_id is not None else None)
        where = ("no cluster" if r.cluster is None else
                 (f"{who}, " if who else "") + f"cluster {r.cluster} (confidence {r.confidence:.2f})")
        box = f" box {r.region.box}" if r.region and r.region.box else ""
        click.echo(f"{r.query}{box}: {where}")
        for rank, h in enumerate(r.hits, 1):
            c = "unsorted" if h.cluster is None else f"cluster {h.cluster}"
            who = h.person or (f"person {h.person_id}" if h.person_id is not None else "")
            click.echo(f"  {rank:2d}. {h.similarity:6.3f}  {c:12s} {who:16s} {h.path}")


@click.command()
@library_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "folders"]), required=True,
              help="csv/json: one row per item; folders: a folder of links per cluster.")
@click.option("--out", "-o", required=True, type=click.Path(), help="File (csv, json) or new folder.")
@click.option("--model", "-m", default=None, help="Vector set to export (default: the latest indexed).")
def export(library: str, fmt: str, out: str, model: Optional[str]) -> None:
    """Export the clustering: CSV, JSON, or one folder per cluster (links, originals untouched).

    \b
    Example:
      peoplemap export --library people.lib --format folders --out by-person/
    """
    path = open_library(library).export(fmt, out, model=model)
    click.echo(f"Wrote {path}")


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(library: str, as_json: bool) -> None:
    """Show what a library holds: counts, models, clusterings, skipped files, last runs.

    \b
    Example:
      peoplemap info --library people.lib
    """
    d = open_library(library).info()
    if as_json:
        print_json(d)
        return
    click.echo(f"Library {d.library}: {d.images} images, {d.items} items")
    for m in d.models:
        c = m.clustering
        cl = ("not clustered" if c is None else
              f"{c.clusters} clusters, {c.unsorted} unsorted (profile {c.profile}"
              + (", stale: re-run cluster" if c.stale else "") + ")")
        click.echo(f"  {m.model} ({m.item_kind}, {m.dim}-d): {m.items} items from "
                   f"{m.images} images; {cl}")
        if m.images_without_items:
            click.echo(f"  images with no {m.item_kind} ({len(m.images_without_items)}):")
            for p in m.images_without_items:
                click.echo(f"    {p!r}")
    if d.skipped:
        click.echo(f"Skipped files ({len(d.skipped)}):")
        for s in d.skipped:
            click.echo(f"  {s.path!r}: {s.reason}")
    for r in d.last_runs[:3]:
        click.echo(f"Run: {r.kind} {r.status} {json.dumps(r.params)}")


@click.command()
def models() -> None:
    """List the embedding models this installation can use.

    \b
    Example:
      peoplemap models
    """
    from ..embed.registry import available_models

    for name, desc in available_models().items():
        click.echo(f"{name:14s} {desc}")


@click.command()
@library_option
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--address", default="localhost", show_default=True,
              help="Interface to listen on (localhost keeps the app private to this machine).")
def ui(library: str, port: int, address: str) -> None:
    """Start the web app (Index, Clusters, Search pages) on http://localhost:PORT.

    \b
    Example:
      peoplemap ui --library people.lib --port 8501
    """
    from ..ui.launch import run_app

    lib = open_library(library, create=True)
    lib.close()
    sys.exit(run_app(str(lib.path), port=port, address=address))


COMMANDS = [index, cluster, search, export, info, models, ui]
"""Registered on the `peoplemap` group by `peoplemap.cli`."""
