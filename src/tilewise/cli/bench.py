"""``tilewise bench``: measure how a job performs on this machine (``bench scaling``).

The measuring is :mod:`tilewise.scaling`; this module parses options and prints.
Errors are :class:`~tilewise.errors.TilewiseError` s, turned into one ``Error: ...``
line and an exit code by :func:`tilewise.cli.main.main`.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tilewise.errors import OutputError


def _verbosity(ctx: click.Context) -> int:
    obj = ctx.find_root().obj
    return int(obj.get("verbosity", 0)) if isinstance(obj, dict) else 0


@click.group("bench")
def bench_group() -> None:
    """Measure how a job performs on this machine.

    \b
    tilewise bench scaling job.toml --workers 1,2,4
    """


@bench_group.command("scaling")
@click.argument("job_file", metavar="JOB")
@click.option("--workers", "workers_spec", default=None, metavar="N,N,...", help="Worker counts to run at (default: 1, 2, 4, ... and the usable cores).")
@click.option("--executor", type=click.Choice(["processes", "threads"]), default="processes", show_default=True, help="Where tiles run.")
@click.option("--repeats", type=click.IntRange(1, 100), default=1, show_default=True, help="Runs per worker count; the median one is kept.")
@click.option("--out", "out_dir", default="tilewise-scaling", show_default=True, metavar="DIR", help="Folder for scaling.json and scaling.png.")
@click.option("--work", "work_dir", default=None, metavar="DIR",
              help="Scratch folder for the runs' outputs, DIR/w{N}/ (default: a temporary folder beside the job's output).")
@click.option("--keep", is_flag=True, help="Keep the runs' outputs in the scratch folder (otherwise removed).")
@click.option("--no-plot", is_flag=True, help="Do not draw scaling.png (no matplotlib needed).")
@click.pass_context
def scaling_cmd(ctx: click.Context, job_file: str, workers_spec: str | None, executor: str, repeats: int, out_dir: str, work_dir: str | None,
                keep: bool, no_plot: bool) -> None:  # fmt: skip
    """Run JOB (a job file) at each worker count and say what limits it.

    Each run writes fresh outputs into a scratch folder. Prints a table (wall
    time, speedup, efficiency, CPU, read/compute/write shares, bytes, peak
    memory) and a verdict - CPU-bound, I/O-bound (decode or disk) or
    overhead-bound - with its evidence; writes DIR/scaling.json and
    DIR/scaling.png (speedup against the ideal line). See docs/bench.md.

    \b
    tilewise bench scaling ndvi.toml --workers 1,2,4 --repeats 3
    tilewise bench scaling ndvi.toml --executor threads --out bench-out/
    """
    from tilewise.api import load_job_file
    from tilewise.executors import usable_cores
    from tilewise.scaling import check_plotting, default_workers, parse_workers, plot, run_scaling, table, write_json

    verbosity = _verbosity(ctx)
    counts = parse_workers(workers_spec) if workers_spec is not None else default_workers(usable_cores())
    if not no_plot:
        check_plotting()  # before the runs, not after them
    job = load_job_file(job_file)
    out = Path(out_dir)
    _check_writable(out)  # before the runs; the folder itself is made after them, so a failed run leaves nothing

    def say(msg: str) -> None:
        if verbosity >= 0:
            click.echo(msg, err=True)

    result = run_scaling(job, counts, executor=executor, repeats=repeats, work_dir=work_dir, keep=keep, progress=say)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the report folder {out_dir!r} ({exc.strerror})", "choose a writable folder with --out") from None
    paths = [write_json(result, out / "scaling.json")]
    if not no_plot:
        paths.append(plot(result, out / "scaling.png"))
    v = result.verdict
    j = result.job
    click.echo(f"tilewise {j['command']}: {j['tiles']} tile(s), {j['pixels'] / 1e6:.1f} Mpix, executor {executor}, "
               f"{result.cores} usable core(s), {repeats} run(s) per worker count")  # fmt: skip
    click.echo(table(result))
    click.echo(f"verdict: {v.label} - {v.summary}")
    for reason in v.reasons:
        click.echo(f"  {reason}")
    if result.work_dir:
        click.echo(f"outputs kept in: {result.work_dir}")
    for p in paths:
        click.echo(f"wrote: {p}")


def _check_writable(folder: Path) -> None:
    """Raise :class:`OutputError` unless ``folder`` is, or can be made, a writable folder."""
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"report folder {str(folder)!r} is not a folder ({str(p)!r} is a file)", "choose another folder with --out")
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"report folder {str(folder)!r} cannot be written ({str(p)!r} is not writable)", "choose a writable folder with --out")


@bench_group.command("executors")
@click.argument("job_file", metavar="JOB")
@click.option("--executors", "engines_spec", default=",".join(("serial", "processes", "dask", "parsl", "slurm", "gnu-parallel")), show_default=True,
              metavar="NAME,...", help="Executors to compare; serial always runs first as the reference.")
@click.option("--workers", type=click.IntRange(1, 4096), default=None, help="Cores per parallel executor (default: usable cores).")
@click.option("--partition", default=None, help="SLURM partition for the slurm executor.")
@click.option("--account", default=None, help="SLURM account for the slurm executor.")
@click.option("--out", "out_dir", default="tilewise-executors", show_default=True, metavar="DIR", help="Folder for executors.json and executors.md.")
@click.option("--work", "work_dir", default=None, metavar="DIR", help="Scratch folder for the runs' outputs (default: temporary, removed after).")
@click.pass_context
def executors_cmd(ctx: click.Context, job_file: str, engines_spec: str, workers: int | None, partition: str | None, account: str | None,
                  out_dir: str, work_dir: str | None) -> None:  # fmt: skip
    """Run JOB on each executor and print the tutorial's table.

    Columns: Example, Jobs, CPU cores/job, Time, CPU efficiency (CPU seconds over
    wall x cores), speedup over serial, and whether the output bytes equal the
    serial run's. CPU is the machine's busy time during each run, so run it on a
    quiet machine. See docs/bench.md.

    \b
    tilewise bench executors ndvi.toml --workers 2
    tilewise bench executors ndvi.toml --executors serial,processes,slurm --partition debug
    """
    from tilewise.api import load_job_file
    from tilewise.executor_bench import parse_engines, run_executor_bench, table, write

    engines = parse_engines(engines_spec)
    job = load_job_file(job_file)
    out = Path(out_dir)
    _check_writable(out)
    verbosity = _verbosity(ctx)

    def say(msg: str) -> None:
        if verbosity >= 0:
            click.echo(msg, err=True)

    result = run_executor_bench(job, engines, workers, work_dir=work_dir, options={"partition": partition, "account": account}, progress=say)
    click.echo(table(result))
    for p in write(result, out):
        click.echo(f"wrote: {p}")
