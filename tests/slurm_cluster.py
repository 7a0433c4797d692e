"""Test helpers for running the workflow: a copy of the repository, a parsed dry run, and a
throw-away single-node SLURM cluster (munged, slurmctld and slurmd on 127.0.0.1).

Everything it writes (config, state, spool, logs, pid files) lives in a directory the caller
owns; munge's key and socket live in a private directory under /tmp that the munge user can
reach (pytest's own tmp tree is root-only). Ports are picked free, so it does not collide with
another cluster on the machine, and :meth:`LocalSlurm.stop` ends exactly the daemons that
:meth:`LocalSlurm.start` started, by PID.

Needs root (slurmd launches jobs as their submitter) and Debian's ``slurmctld slurmd
slurm-client munge`` packages; :func:`unavailable_reason` installs them when it can and says
why not otherwise, for ``pytest.skip``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT_DIRS = ("data", "runs", "interactions", "logs", "results", ".snakemake")

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")
EXECUTABLES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun", "scancel")


# ------------------------------------------------------------------------------------ workflow


def workflow_env(**extra: str) -> dict[str, str]:
    """The environment a workflow run gets: this venv's tools first, offline hubs, no GPU mask.

    ``CUDA_VISIBLE_DEVICES`` is removed so that rule shells prove they run under ``set -u``
    without it (SLURM sets it only in jobs that hold a GPU).
    """
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", **extra)
    return env


def copy_repo(dest: Path) -> Path:
    """The repository's tracked files plus untracked, non-ignored ones (new rules being written)
    copied to ``dest``, without anything under the workflow's output directories (committed
    figures and tables included), so that a workflow run there runs every job and never touches
    the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if rel.split("/", 1)[0] in OUTPUT_DIRS:
            continue
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@dataclass
class DryJob:
    """One job of a dry run, as Snakemake prints it."""

    rule: str
    fields: dict[str, str] = field(default_factory=dict)
    shell: str | None = None

    def files(self, key: str) -> list[str]:
        value = self.fields.get(key, "")
        return [f.strip() for f in value.split(",") if f.strip()]


@dataclass
class DryRun:
    stats: Counter  # rule -> job count, from the "Job stats" table
    jobs: list[DryJob]
    output: str


_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^ {4}(\w+): (.*)$")


def parse_dry_run(text: str) -> DryRun:
    stats: Counter = Counter()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    jobs: list[DryJob] = []
    for line in lines:
        if match := _RULE.match(line):
            jobs.append(DryJob(match.group(1)))
        elif jobs and (match := _FIELD.match(line)):
            jobs[-1].fields.setdefault(match.group(1), match.group(2))
        elif jobs and line.startswith("Shell command: "):
            command = line[len("Shell command: ") :]
            jobs[-1].shell = None if command == "None" else command
    return DryRun(stats, jobs, text)


@lru_cache(maxsize=4)
def dry_run(configfile: str = "config/smoke.yaml", targets: tuple[str, ...] = ()) -> DryRun:
    """Every job of the workflow (or of ``targets``) for a config (several files: an overlay,
    separated by spaces), as ``--forceall`` into an empty directory lists them."""
    with tempfile.TemporaryDirectory(prefix="transferscope-dry-") as empty:
        cmd = [
            sys.executable, "-m", "snakemake", *targets, "--dry-run", "--forceall", "-p",
            "--workflow-profile", "none", "--snakefile", str(REPO / "Snakefile"),
            "--directory", empty, "--configfile", *(str(REPO / f) for f in configfile.split()),
        ]  # fmt: skip
        result = subprocess.run(
            cmd, cwd=REPO, env=workflow_env(), capture_output=True, text=True, timeout=600
        )
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --dry-run failed:\n{result.stdout}\n{result.stderr}")
    return parse_dry_run(result.stdout + result.stderr)


# ---------------------------------------------------------------------------------- SLURM


def unavailable_reason() -> str | None:
    """None when a local cluster can run here (installing packages if needed), else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd runs jobs as their submitter)"
    missing = [exe for exe in EXECUTABLES if shutil.which(exe) is None]
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed and no apt-get to install {' '.join(PACKAGES)}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = None
    for attempt in (install, ["apt-get", "update", "-q"], install):
        try:
            result = subprocess.run(attempt, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"cannot run {' '.join(attempt)}: {err}"
        if attempt is install and result.returncode == 0:
            break
    if result is None or result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-3:] if result else []
        return f"cannot install {' '.join(PACKAGES)} with apt-get: {' / '.join(tail)}"
    missing = [exe for exe in EXECUTABLES if shutil.which(exe) is None]
    return f"installed {' '.join(PACKAGES)} but {missing} still missing" if missing else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemTotal line")


class LocalSlurm:
    """One node named ``hostname -s`` at 127.0.0.1 with ``gpus`` fake GPUs (GRES on /dev/null,
    /dev/zero, ...: SLURM only needs device files to hand out)."""

    def __init__(self, root: Path, gpus: int = 1, partition: str = "debug"):
        self.root = Path(root)
        if not 0 <= gpus <= len(FAKE_GPU_DEVICES):
            raise ValueError(f"gpus={gpus}: a local cluster fakes 0 to {len(FAKE_GPU_DEVICES)}")
        self.gpus = gpus
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        # a fresh name per cluster: slurmctld refuses state left behind by another cluster name
        self.name = f"ts{uuid.uuid4().hex[:8]}"
        self.conf = self.root / "etc" / "slurm.conf"
        self.logs = self.root / "log"
        self.munge_dir: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}

    # ----------------------------------------------------------------------------- config

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, squeue) to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def bin_dir(self) -> Path:
        """Put first on PATH: an ``srun`` that finds this cluster's config. The executor's job
        step drops every SLURM_* variable, SLURM_CONF included, before it calls ``srun``; on a
        real cluster srun then reads /etc/slurm, here it would find no cluster at all."""
        return self.root / "bin"

    def write_config(self) -> None:
        for sub in ("etc", "state", "spool", "log", "run", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        srun = self.bin_dir / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)
        assert self.munge_dir is not None
        # twice the cores (SlurmdParameters=config_overrides allows it): jobs spend much of their
        # time starting up and waiting for the executor's next status check, not computing
        cpus = max(4, 2 * (os.cpu_count() or 1))
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        # RealMemory a little under the machine's, so slurmd never reports "Low RealMemory"
        memory = max(512, int(memory_mb() * 0.9))
        lines = [
            f"ClusterName={self.name}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_dir / 'munge.socket'}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "GresTypes=gpu",
            "ReturnToService=2",
            # finished jobs stay visible to squeue for an hour: what the executor's squeue
            # status command (and the test's checks) rely on without an accounting database
            "MinJobAge=3600",
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory}"
            f"{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        # character devices that every Linux has stand in for GPUs; SLURM only needs the files
        devices = FAKE_GPU_DEVICES[: self.gpus]
        gres_lines = [f"NodeName={self.node} Name=gpu File={dev}" for dev in devices]
        (self.root / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")

    # ----------------------------------------------------------------------------- daemons

    def start(self, timeout: float = 90.0) -> LocalSlurm:
        try:
            self._start_munge()
            self.write_config()
            env = dict(os.environ, **self.env)
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], env)
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node], env)
            self.wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        # munged checks that its directories are owned by its user and not writable by others,
        # and runs as the munge user: a private directory under /tmp (sticky) satisfies both.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="transferscope-munge-", dir="/tmp"))
        os.chmod(self.munge_dir, 0o711)  # clients must reach the socket; nobody else may write
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        user = "munge"
        try:
            shutil.chown(self.munge_dir, user, user)
            shutil.chown(key, user, user)
        except (LookupError, PermissionError):
            user = None  # no munge user: run munged as root (it allows that)
        cmd = [
            "munged",
            "--foreground",
            f"--key-file={key}",
            f"--socket={self.munge_dir / 'munge.socket'}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ]
        self._spawn("munged", cmd, dict(os.environ), user=user)
        self._wait(lambda: (self.munge_dir / "munge.socket").exists(), 20, "munged's socket")

    def _spawn(self, name: str, cmd: list[str], env: dict, user: str | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, user=user, start_new_session=True
        )
        out.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n"
                        + self.diagnostics()
                    )
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {timeout:.0f} s\n{self.diagnostics()}")

    def wait_idle(self, timeout: float) -> None:
        def idle() -> bool:
            out = self.run(["sinfo", "--noheader", "--Node", "--format=%N %T"], check=False)
            return any(line.split() == [self.node, "idle"] for line in out.splitlines())

        self._wait(idle, timeout, f"idle node {self.node} in sinfo")

    def run(self, cmd: list[str], check: bool = True) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        result = subprocess.run(
            cmd, env=dict(os.environ, **self.env), capture_output=True, text=True, timeout=30
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def stop(self) -> None:
        """Cancel what is left, then end the daemons this object started (by PID), newest first."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self.run(["scancel", f"--user={os.getuid()}"], check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.processes.clear()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def diagnostics(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        logs = sorted(self.logs.glob("*")) if self.logs.is_dir() else []
        if self.munge_dir is not None:
            logs.append(self.munge_dir / "munged.log")
        for log in logs:
            if log.is_file():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
