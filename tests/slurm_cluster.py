"""A real single-node SLURM cluster on loopback for the tests that need one.

Use it from a test module with::

    from tests.slurm_cluster import SlurmCluster
    from tests.slurm_cluster import slurm_cluster as slurm_cluster_fixture  # noqa: F401

(the alias keeps ruff's F811 quiet where tests take a ``slurm_cluster`` argument; the fixture is
registered under its own name ``slurm_cluster`` whatever the imported name), then::

    @pytest.mark.slurm
    def test_something(slurm_cluster: SlurmCluster) -> None:
        job = slurm_cluster.sbatch("--wrap", "true")
        assert slurm_cluster.wait(job)["JobState"] == "COMPLETED"

The session-scoped fixture ``slurm_cluster`` runs ``scripts/slurm/up.sh`` into a fresh state
directory (installing the Debian packages when they are missing), sets ``SLURM_CONF`` for the
session and runs ``scripts/slurm/down.sh`` at the end. It skips when the cluster cannot be had
here (not Linux, not root, no apt-get: up.sh exits 3) unless ``TILEWISE_REQUIRE_SLURM=1``, and
fails with the tail of up.sh's output on any other failure. Under pytest-xdist every worker gets
a cluster of its own on its own ports.

There is no slurmdbd, so ``sacct`` does not work: read states and exit codes from
``scontrol show job`` (:meth:`SlurmCluster.job`) or the job-completion file
(:attr:`SlurmCluster.jobcomp`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "scripts" / "slurm" / "up.sh"
DOWN = REPO / "scripts" / "slurm" / "down.sh"

#: Job states in which a job is still queued or running (``squeue -t``).
ACTIVE_STATES = "PD,CF,R,CG,S,RQ,RS,RH,SO,SI,ST"
#: How long up.sh may take: a cold install plus bring-up is ~10 s, a slow mirror much more.
UP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-node test cluster.

    Parameters
    ----------
    conf : Path
        Its ``slurm.conf``; ``SLURM_CONF`` must point here for the SLURM commands to find it.
    state_dir : Path
        The directory holding all its state, logs and the job-completion file.
    partition : str
        The default (and only) partition.
    """

    conf: Path
    state_dir: Path
    partition: str = "debug"

    @property
    def jobcomp(self) -> Path:
        """The job-completion file (one line per finished job, ``jobcomp/filetxt``)."""
        return self.state_dir / "jobcomp.txt"

    def env(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """An environment for subprocesses that talk to this cluster.

        Parameters
        ----------
        base : Mapping[str, str], optional
            The environment to start from; ``os.environ`` when omitted.
        **extra : str
            Further variables to set.

        Returns
        -------
        dict[str, str]
            A copy of ``base`` with ``SLURM_CONF`` pointing at :attr:`conf` and ``extra`` applied.
        """
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env

    def run(self, *args: str, cwd: str | Path | None = None, timeout: float = 30.0) -> str:
        """Run a SLURM command (``sbatch``, ``scontrol``, ...) against this cluster.

        Parameters
        ----------
        *args : str
            The command and its arguments.
        cwd : str or Path, optional
            Working directory.
        timeout : float
            Seconds before the command is killed.

        Returns
        -------
        str
            Its standard output.

        Raises
        ------
        subprocess.CalledProcessError
            When it exits non-zero (its stderr is in the exception).
        """
        return subprocess.run(list(args), cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=True).stdout

    def sbatch(self, *args: str, cwd: str | Path | None = None) -> str:
        """Submit a batch job to :attr:`partition` and return its job id.

        Parameters
        ----------
        *args : str
            ``sbatch`` options and script (``"--wrap", "cmd"`` works).
        cwd : str or Path, optional
            Working directory of ``sbatch`` (and so the job's default one).

        Returns
        -------
        str
            The job id (for an array, the array's job id).
        """
        out = self.run("sbatch", "--parsable", "-p", self.partition, *args, cwd=cwd)
        return out.strip().split(";")[0]

    def active(self, job_id: str) -> bool:
        """Whether the job (or any element of the array) is still pending, running or completing.

        Parameters
        ----------
        job_id : str
            A job id, array job id or ``ARRAYID_INDEX``.

        Returns
        -------
        bool
            ``True`` while ``squeue`` lists it in an active state.
        """
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-t", ACTIVE_STATES, "-o", "%i"], env=self.env(), capture_output=True, text=True, timeout=30)
        return bool(proc.stdout.strip())

    def job(self, job_id: str) -> dict[str, str]:
        """The ``scontrol show job`` fields of one job, e.g. ``JobState`` and ``ExitCode``.

        Parameters
        ----------
        job_id : str
            A job id or ``ARRAYID_INDEX``. For an array job id, one of its elements is described.

        Returns
        -------
        dict[str, str]
            Field name to value. Fields are split on spaces, so a free-text value with spaces
            (a job name, a command line) keeps only its first word.
        """
        out = self.run("scontrol", "-o", "show", "job", job_id)
        first = out.splitlines()[0] if out else ""
        return dict(item.split("=", 1) for item in first.split() if "=" in item)

    def wait_state(self, job_id: str, states: str | tuple[str, ...], timeout: float = 60.0) -> dict[str, str]:
        """Poll ``scontrol show job`` until the job reaches one of ``states``.

        Parameters
        ----------
        job_id : str
            A job id or ``ARRAYID_INDEX``.
        states : str or tuple of str
            Acceptable ``JobState`` values, e.g. ``"RUNNING"``.
        timeout : float
            Seconds to wait.

        Returns
        -------
        dict[str, str]
            The job's fields once it is in one of ``states``.

        Raises
        ------
        TimeoutError
            When it is not there in time (the last state is in the message).
        """
        wanted = (states,) if isinstance(states, str) else states
        deadline = time.monotonic() + timeout
        info = self.job(job_id)
        while info.get("JobState") not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not {'/'.join(wanted)} after {timeout:g}s: JobState={info.get('JobState')} Reason={info.get('Reason')}")
            time.sleep(0.1)
            info = self.job(job_id)
        return info

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, str]:
        """Wait until a job (every element of an array) has left the queue.

        Polls ``squeue`` every 0.1 s rather than using ``sbatch --wait``, which polls with
        growing sleeps.

        Parameters
        ----------
        job_id : str
            A job id or array job id.
        timeout : float
            Seconds to wait.

        Returns
        -------
        dict[str, str]
            ``scontrol show job`` fields of the job (of the first element for an array).

        Raises
        ------
        TimeoutError
            When it is still queued or running after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while self.active(job_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still queued or running after {timeout:g}s")
            time.sleep(0.1)
        return self.job(job_id)


def _state_dir() -> Path:
    """A fresh state directory for up.sh.

    Not under pytest's basetemp: munged wants every directory above its socket searchable by
    all (basetemp is mode 0700), and a UNIX socket path holds at most 107 bytes.
    """
    return Path(tempfile.mkdtemp(prefix="twslurm-", dir="/tmp"))


def _keep_logs(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the cluster's logs and job-completion file under pytest's basetemp, for a look afterwards."""
    dest = tmp_path_factory.mktemp("slurm-logs")
    for rel in ("log/slurmctld.log", "log/slurmd.log", "munge/munged.log", "jobcomp.txt", "slurm.conf"):
        src = state_dir / rel
        if src.is_file():
            shutil.copy2(src, dest / src.name)
    return dest


def _give_up(state_dir: Path, tmp_path_factory: pytest.TempPathFactory, what: str) -> str:
    """After a failed up.sh: stop what it started, keep the logs, remove the state directory; the failure message."""
    down = _down(state_dir, timeout=60)
    logs = _keep_logs(state_dir, tmp_path_factory)
    if down.returncode == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        return f"{what}\n(logs kept in {logs})"
    return f"{what}\n(down.sh failed too, state left in {state_dir}:\n{_tail(down.stderr, 10)})"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _port_base() -> str | None:
    """Distinct ports for each pytest-xdist worker (up.sh moves on by itself when they are taken)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return str(16817 + 20 * int(worker[2:]))
    return None


@dataclass
class _Session:
    """The one cluster of this process, shared by every module that imports the fixture."""

    cluster: SlurmCluster | None = None
    saved_conf: str | None = None
    users: int = 0
    skip: str | None = None
    failure: str | None = None


_SESSION = _Session()


def _down(state_dir: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DOWN), str(state_dir)], capture_output=True, text=True, timeout=timeout)


def _start(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run up.sh into ``_SESSION``: a cluster, or the reason to skip or fail."""
    if not sys.platform.startswith("linux"):
        _SESSION.skip = f"the SLURM test cluster needs Linux (this is {sys.platform})"
        return
    state_dir = _state_dir()
    env = dict(os.environ)
    port = _port_base()
    if port and "TILEWISE_SLURM_PORT" not in env:
        env["TILEWISE_SLURM_PORT"] = port
    try:
        proc = subprocess.run(["bash", str(UP), str(state_dir)], env=env, capture_output=True, text=True, timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        _SESSION.failure = _give_up(state_dir, tmp_path_factory, f"scripts/slurm/up.sh {state_dir} did not finish in {UP_TIMEOUT_S:g}s:\n{_tail(err)}")
        return
    if proc.returncode == 3:
        _SESSION.skip = _tail(proc.stderr, 1) or "scripts/slurm/up.sh cannot start a cluster here"
        shutil.rmtree(state_dir, ignore_errors=True)
        return
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("export SLURM_CONF="):
        what = f"scripts/slurm/up.sh {state_dir} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}\n{_tail(proc.stdout, 5)}"
        _SESSION.failure = _give_up(state_dir, tmp_path_factory, what)
        return
    conf = Path(lines[-1].removeprefix("export SLURM_CONF="))
    _SESSION.cluster = SlurmCluster(conf=conf, state_dir=conf.parent, partition="debug")
    _SESSION.saved_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)


def _stop(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Restore ``SLURM_CONF``, run down.sh, keep the logs and remove the state directory."""
    cluster = _SESSION.cluster
    assert cluster is not None
    _SESSION.cluster = None
    if _SESSION.saved_conf is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = _SESSION.saved_conf
    down = _down(cluster.state_dir)
    _keep_logs(cluster.state_dir, tmp_path_factory)
    if down.returncode != 0:
        pytest.fail(f"scripts/slurm/down.sh {cluster.state_dir} failed (exit {down.returncode}), state left in place:\n{_tail(down.stderr)}")
    shutil.rmtree(cluster.state_dir, ignore_errors=True)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node SLURM cluster for the whole session, stopped at its end.

    The cluster is started once per process even when several test modules import this
    fixture (each import makes pytest keep a fixture of its own), and stopped after the last
    of them is torn down.

    Parameters
    ----------
    tmp_path_factory : pytest.TempPathFactory
        Where the cluster's state directory is made.

    Yields
    ------
    SlurmCluster
        The running cluster; ``os.environ["SLURM_CONF"]`` points at its ``slurm.conf`` until
        the session ends.
    """
    if _SESSION.cluster is None and _SESSION.skip is None and _SESSION.failure is None:
        _start(tmp_path_factory)
    require = os.environ.get("TILEWISE_REQUIRE_SLURM", "") not in ("", "0")
    if _SESSION.skip is not None:
        if require:
            pytest.fail(f"TILEWISE_REQUIRE_SLURM is set but: {_SESSION.skip}")
        pytest.skip(_SESSION.skip)
    if _SESSION.failure is not None:
        pytest.fail(_SESSION.failure)
    assert _SESSION.cluster is not None
    _SESSION.users += 1
    try:
        yield _SESSION.cluster
    finally:
        _SESSION.users -= 1
        if _SESSION.users == 0:
            _stop(tmp_path_factory)
