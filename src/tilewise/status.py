"""Reading a job's state back from its work directory (for ``tilewise status`` and ``resume``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from tilewise.errors import InputError, UsageError
from tilewise.job import Job
from tilewise.manifest import Manifest
from tilewise.runner import output_done


def find_workdir(output: str) -> Path:
    """Return the work directory of the job that writes ``output`` (a file or a batch directory, or their s3:// URL)."""
    from tilewise.remote_output import staged_output

    with contextlib.suppress(UsageError):  # not an output URL: not found below
        output = staged_output(output)[0]  # an s3:// output's work directory is in its local staging folder
    p = Path(output.rstrip("/") or output)
    for cand in (p / ".tilewise", p.parent / f".{p.name}.tilewise"):
        if (cand / "job.json").is_file():
            return cand
    raise InputError(f"no tilewise job found for {output!r}", "give the -o path of a job (it keeps its state in a hidden .tilewise folder beside it)")


_START_OVER = "rerun the original command with --overwrite to start that job over"


def _read_saved(wd: Path) -> dict[str, Any]:
    path = wd / "job.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"the saved job {str(path)!r} is damaged ({exc})", _START_OVER) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("job"), dict):
        raise InputError(f"the saved job {str(path)!r} is damaged (it holds no job description)", _START_OVER)
    return saved


def load_saved_job(output: str) -> tuple[Job, dict[str, Any]]:
    """Load the job saved in the work directory of ``output``."""
    return load_job_at(find_workdir(output))


def load_job_at(wd: Path) -> tuple[Job, dict[str, Any]]:
    """Load the job saved in the work directory ``wd`` (with the saved record: fingerprint, outputs, tiles)."""
    from pydantic import ValidationError

    if not (wd / "job.json").is_file():
        raise InputError(f"{str(wd)!r} holds no tilewise job (no job.json)", "give the work directory of a job: the hidden .tilewise folder beside its output")
    saved = _read_saved(wd)
    try:
        return Job.model_validate(saved["job"]), saved
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise InputError(f"the saved job {str(wd / 'job.json')!r} is damaged ({where}: {err.get('msg', '')})", _START_OVER) from None


def job_status(output: str) -> dict[str, Any]:
    """Summarise the state of the job writing ``output``.

    Returns
    -------
    dict
        command, fingerprint, tiles total/done, outputs total/done, failed tiles
        with their errors and attempts, whether a run holds the lock, and the state
        (``complete``, ``failed``, ``running`` or ``incomplete``).
    """
    wd = find_workdir(output)
    saved = _read_saved(wd)
    if saved.get("job", {}).get("upload"):
        from tilewise.remote import use_s3_endpoint

        use_s3_endpoint(saved["job"].get("s3_endpoint"))  # uploaded outputs are checked in their store
    latest = Manifest(wd).latest()
    tiles_done = sum(1 for r in latest.values() if r.get("kind") == "tile")
    outputs = saved.get("outputs", [])
    outs_done = sum(output_done(latest.get(f"{i}/output"), Path(path)) for i, path in enumerate(outputs))
    tiles_total = saved.get("tiles", 0)
    if saved.get("job", {}).get("rasterize") and not saved["job"]["rasterize"].get("like"):
        # TMS tiles: one output folder, complete once the run recorded "done"; GeoTIFF and web tiles count as tiles
        outs_done = int(latest.get("done", {}).get("kind") == "done" and (Path(outputs[0]) / "rasters_summary.csv").exists())
        tiles_done += sum(1 for r in latest.values() if r.get("kind") == "web")
        # Before the finishing step knows the parents, the zoom's own tiles are the total so far.
        tiles_total = latest.get("plan", {}).get("total") or len(latest.get("stage", {}).get("tiles", []))
        if outs_done:
            tiles_done = tiles_total  # tiles left empty (no polygon reaches them) are never written
    failed = {k: describe_failure(r) for k, r in sorted(latest.items()) if r.get("kind") == "failed"}
    running = _locked(wd / "lock")
    batch = _batch(wd, saved, latest, outs_done == len(outputs))
    if outs_done == len(outputs):
        state = "complete"
    elif running or batch.get("active"):
        state = "running"
    elif failed:
        state = "failed"
    else:
        state = "incomplete"
    return {
        "output": output, "workdir": str(wd), "command": saved["job"].get("command"), "fingerprint": saved.get("fingerprint"),
        "state": state, "tiles_total": tiles_total, "tiles_done": tiles_done, "outputs_total": len(outputs),
        "outputs_done": outs_done, "failed": failed, "lock_holder": running, "batch": batch,
    }  # fmt: skip


def _batch(wd: Path, saved: dict[str, Any], latest: dict[str, dict[str, Any]], complete: bool) -> dict[str, Any]:
    """For a job run as batch parts (SLURM array, GNU parallel): the latest submission, active jobs, unfinished parts."""
    from tilewise import launch

    subs = launch.submissions(wd)
    if not subs:
        return {}
    sub = subs[-1]
    out: dict[str, Any] = {"system": sub.get("system"), "submissions": len(subs), "parts": sub.get("n"),
                           "array_job": sub.get("array_job", ""), "finish_job": sub.get("finish_job", ""),
                           "active": launch.active_jobs(wd), "unfinished": []}  # fmt: skip
    if not complete:
        try:
            job = Job.model_validate(saved["job"])
            out["unfinished"] = launch.part_report(wd, launch.work_for(job), latest)
        except Exception as exc:  # inputs gone or changed: still show the rest
            out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def describe_failure(rec: dict[str, Any]) -> str:
    """A failed record's error with its number of attempts."""
    n = rec.get("attempts")
    return f"{rec.get('error', '')} (after {n} attempt{'s' if n != 1 else ''})" if n else str(rec.get("error", ""))


def _locked(path: Path) -> str | None:
    import fcntl
    import os

    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
