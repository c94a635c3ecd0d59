"""`peoplemap eval`: score a model and clustering profile on a labeled folder (see eval_runner)."""
from __future__ import annotations

from typing import Optional

import click

from .common import print_json, progress_bar

CAMERA_HELP = (
    "Regex searched in each file NAME; its first capture group (or the whole match) is the "
    "camera id, and retrieval becomes cross-camera (queries only search other cameras). With "
    "named groups the camera is the name of the group that matched. "
    r"col780_reid_2cam_8angle (01_3.png): '^(\d\d)_'. "
    r"cuhk01_campus_first486 (0001003.png; 001-002 camera A, 003-004 camera B): "
    r"'^\d{4}00(?:(?P<A>[12])|(?P<B>[34]))'.")


@click.command("eval")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--model", "-m", default=None,
              help="Embedding model (default: face); `peoplemap models` lists them.")
@click.option("--profile", type=click.Choice(["default", "seed", "chinese-whispers"]), default="default",
              show_default=True, help="Clustering profile to evaluate.")
@click.option("--min-cluster-size", type=click.IntRange(min=2), default=None,
              help="Smallest group that counts as a cluster (profile default if not given).")
@click.option("--baseline", type=click.Choice(["seed", "chinese-whispers"]), default=None,
              help="Also evaluate a baseline and show it beside: seed = the design's method "
                   "(whole-image mobilenetv2 + seed profile); chinese-whispers = dlib's chinese "
                   "whispers on the same vectors.")
@click.option("--camera-pattern", metavar="REGEX", default=None, help=CAMERA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--keep-library", type=click.Path(file_okay=False), default=None,
              help="Index into this library folder (kept) instead of a temporary one.")
def eval_command(folder: str, model: Optional[str], profile: str, min_cluster_size: Optional[int],
                 baseline: Optional[str], camera_pattern: Optional[str], as_json: bool,
                 keep_library: Optional[str]) -> None:
    """Score retrieval and clustering on a labeled FOLDER of <identity>/<image> files.

    Folders starting with _ are not identities; byte-identical duplicates are dropped before
    scoring. Reports rank-1/5/10 and mAP (leave-one-out, or cross-camera with
    --camera-pattern), BCubed and pairwise P/R/F, ARI, NMI, the unsorted (noise) fraction and the
    time per stage. Clustering is also scored over all labeled photos (a photo without a face
    as a group of its own) and, for face models, over every face found, where clusters spanning 5
    or more identities are counted as false detections.

    \b
    Example:
      peoplemap eval ../shared/data/yale_faces --baseline seed
      peoplemap eval ../shared/data/celeba_wild_dev --baseline chinese-whispers
      peoplemap eval ../shared/data/col780_reid_2cam_8angle --camera-pattern '^(\\d\\d)_' --json
    """
    from ..eval_runner import evaluate_folder

    with progress_bar("") as cb:
        report = evaluate_folder(folder, model=model, profile=profile,
                                 min_cluster_size=min_cluster_size, baseline=baseline,
                                 camera_pattern=camera_pattern, keep_library=keep_library,
                                 progress=cb)
    if as_json:
        print_json(report)
        return
    click.echo(report.format_table())


COMMANDS = [eval_command]
"""Registered on the `peoplemap` group by `peoplemap.cli`."""
