"""/jobs: index and cluster runs as jobs (start, progress, result, cancel), and the library's info."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from ..embed.registry import available_models
from ..responses import LibraryInfo, jsonable
from .deps import Config, Jobs, Lib
from .errors import ApiError
from .jobs import Job
from .roots import resolve_folder
from .schemas import ClusterJobRequest, IndexJobRequest, errors

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2 ** 62)]


def _check_model(model: str | None) -> None:
    if model is None:
        return
    if model == "onnx" or model.startswith("onnx:"):
        raise ApiError(422, "onnx:PATH models name a file on the server; use them through the "
                            "CLI (`peoplemap index ... --model onnx:PATH`), not the API")
    models = available_models()
    if model not in models:
        raise ApiError(422, f"Unknown model: {model!r}. Must be one of {sorted(models)}")


def _started(job: Job) -> JSONResponse:
    return JSONResponse(job.to_json(), status_code=202, headers={"Location": f"/jobs/{job.id}"})


@router.post("/jobs/index", status_code=202, responses={202: {"model": Job},
                                                        **errors(403, 404, 409, 415, 422)})
def start_index(body: IndexJobRequest, config: Config, jobs: Jobs) -> JSONResponse:
    """Index a folder (new and changed photos only) in a worker process. The folder must be under
    one of the server's roots (`--root`): absolute, or relative to the first root. 409 while
    another job (or a CLI run) writes to the library."""
    _check_model(body.model)
    folder = resolve_folder(body.folder, config.roots)
    return _started(jobs.start("index", {"folder": str(folder), "model": body.model,
                                         "rebuild": body.rebuild}))


@router.post("/jobs/cluster", status_code=202, responses={202: {"model": Job},
                                                          **errors(409, 415, 422)})
def start_cluster(body: ClusterJobRequest, jobs: Jobs) -> JSONResponse:
    """Cluster the library (people keep their names) in a worker process."""
    _check_model(body.model)
    return _started(jobs.start("cluster", {"model": body.model, "profile": body.profile,
                                           "min_cluster_size": body.min_cluster_size}))


@router.get("/jobs", responses={200: {"model": list[Job]}})
def list_jobs(jobs: Jobs) -> JSONResponse:
    """Jobs this server started, newest first."""
    return JSONResponse([j.to_json() for j in jobs.all()])


@router.get("/jobs/{job_id}", responses={200: {"model": Job}, **errors(404)})
def get_job(job_id: JobId, jobs: Jobs) -> JSONResponse:
    """A job's status, progress (stage, done, total), and result once done."""
    return JSONResponse(jobs.get(job_id).to_json())


@router.post("/jobs/{job_id}/cancel", status_code=202, responses={202: {"model": Job},
                                                                  **errors(404, 409)})
def cancel_job(job_id: JobId, jobs: Jobs) -> JSONResponse:
    """Ask a job to stop. An index job stops after the batch in flight and keeps every committed
    batch (indexing the folder again resumes); a clustering stores nothing. The job's status goes
    "cancelling", then "cancelled"."""
    return JSONResponse(jobs.cancel(job_id).to_json(), status_code=202)


@router.get("/library", tags=["library"], responses={200: {"model": LibraryInfo}})
def library_info(lib: Lib) -> JSONResponse:
    """Counts, models, clusterings, skipped files and the last runs (`peoplemap info --json`)."""
    return JSONResponse(jsonable(lib.info()))


@router.get("/models", tags=["library"], responses={200: {"model": dict[str, str]}})
def models() -> JSONResponse:
    """The models this installation can use (`peoplemap models`)."""
    return JSONResponse(available_models())


@router.get("/health", tags=["library"])
def health() -> JSONResponse:
    """{"status": "ok"} while the server answers (behind the token like everything else)."""
    return JSONResponse({"status": "ok"})
