"""Cluster execution: the SLURM profile, jobs that are safe to run concurrently, and the smoke
workflow through a real single-node SLURM cluster giving the same checkpoints as a local run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from transferscope import workflow as ts_paths
from transferscope.config import REGIMES, load_config

from .slurm_cluster import REPO, LocalSlurm, copy_repo, dry_run, unavailable_reason, workflow_env

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"


def rules_requesting_a_gpu() -> set[str]:
    """Rules whose resources ask for `gpu=... gpus()`, read from the rule files themselves (the one
    place that says which jobs hold a device)."""
    found = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            if re.search(r"^\s+gpu=.*gpus\(\)", block, flags=re.M):
                found.add(name)
    return found


def test_gpu_rules_are_read_from_the_rule_files():
    gpu = rules_requesting_a_gpu()
    assert {*REGIMES, "interactions", "tune"} <= gpu
    assert not gpu & {"dataset", "knowledge", "claims", "report"}


SMOKE = "config/smoke.yaml"


# ------------------------------------------------------------------------------------ profile


def test_slurm_profile_uses_known_plugin_options_and_no_cluster_values():
    from snakemake_executor_plugin_slurm import ExecutorSettings

    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    known = {f"slurm-{f.name.replace('_', '-')}" for f in dataclasses.fields(ExecutorSettings)}
    unknown = {key for key in profile if key.startswith("slurm-")} - known
    assert not unknown, f"{PROFILE}: not options of the installed SLURM plugin: {unknown}"
    cluster_specific = {"slurm_partition", "slurm_account", "qos", "clusters", "constraint"}
    assert not cluster_specific & set(profile.get("default-resources", {})), (
        "partition/account belong on the command line or in a user profile, not the repo's"
    )
    assert {"runtime", "mem_mb"} <= set(profile["default-resources"])


def test_default_profile_stays_local():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile.get("executor", "local") in ("local", "dryrun")
    assert not any(key.startswith("slurm") for key in profile)


# -------------------------------------------------------------------------------- concurrency


def test_jobs_write_disjoint_files_and_log_under_logs():
    jobs = dry_run(SMOKE).jobs
    assert jobs, "the dry run listed no jobs"
    writers: dict[str, list[str]] = {}
    for job in jobs:
        for path in job.files("output") + job.files("log"):
            writers.setdefault(path, []).append(job.rule)
    shared = {path: rules for path, rules in writers.items() if len(rules) > 1}
    assert not shared, f"files written by several jobs: {shared}"
    for job in jobs:
        if not job.files("output"):
            continue  # a target rule such as `all` runs nothing
        logs = job.files("log")
        assert logs, f"rule {job.rule} ({job.fields.get('wildcards', '')}) has no log: file"
        assert all(log.startswith("logs/") for log in logs), f"{job.rule}: logs {logs}"
        outputs = job.files("output")
        nested = [(o, d) for o in outputs for d in writers if o != d and o.startswith(d + "/")]
        assert not nested, f"{job.rule} writes inside another job's directory: {nested}"


def test_shell_commands_survive_set_u_and_use_no_fixed_temp_paths():
    """Snakemake runs shells with `set -euo pipefail`; SLURM sets CUDA_VISIBLE_DEVICES only in
    jobs that hold a GPU, so any environment variable must be read with a default."""
    unguarded = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
    for job in dry_run(SMOKE).jobs:
        if job.shell is None:
            continue
        names = {a or b for a, b in unguarded.findall(job.shell)}
        assert not names, (
            f"rule {job.rule} reads ${sorted(names)} unguarded; write ${{NAME:-}} so the job "
            "runs where it is unset"
        )
        assert not re.search(r"(?<![\w}])/tmp/", job.shell), (
            f"rule {job.rule} uses a fixed /tmp path; temporary files go beside the output "
            "(transferscope.io.atomic_path) or under $TMPDIR, which is per job"
        )


# ------------------------------------------------------------------------------- local SLURM

SBATCH_WRAPPER = """#!/bin/sh
# records each submission (job id, --comment = rule and wildcards), then submits it for real
comment=""; prev=""
for arg in "$@"; do [ "$prev" = "--comment" ] && comment=$arg; prev=$arg; done
out=$({real} "$@") || exit $?
printf '%s\\t%s\\n' "$out" "$comment" >> {record}
printf '%s\\n' "$out"
"""


def run_snakemake(args: list[str], cwd: Path, env: dict, log: Path) -> float:
    """Run snakemake in ``cwd``; its output goes to ``log``. Returns the wall time in seconds."""
    start = time.monotonic()
    with open(log, "w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=2700,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"snakemake {' '.join(args)} failed ({result.returncode}) in {cwd}:\n{tail}")
    return time.monotonic() - start


def digests(root: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
    }


def undeclared_shared_files(root: Path, jobs) -> list[str]:
    """Files under the output trees that no job declares and that lie in a directory holding
    declared outputs of more than one job: nobody owns them, so two jobs may race on them."""
    owners: dict[Path, set[int]] = {}
    declared: set[Path] = set()
    for index, job in enumerate(jobs):
        for out in job.files("output") + job.files("log"):
            declared.add(root / out)
            owners.setdefault((root / out).parent, set()).add(index)
    suspicious = []
    for top in ("data", "runs", "interactions", "results"):
        for path in (root / top).rglob("*") if (root / top).is_dir() else []:
            if path.is_file() and path not in declared and len(owners.get(path.parent, ())) > 1:
                suspicious.append(str(path.relative_to(root)))
    return suspicious


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(5400)
def test_smoke_workflow_through_local_slurm_equals_local_run(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # every job kind up to the interactions (data and tuning on the CPU; the four regimes and the
    # extraction on a GPU) of one experiment; the text experiment and the aggregates add no new
    # kind of job, only minutes of sbatch round trips
    config = load_config(REPO / SMOKE)
    experiment = "digits_resnet"
    targets = tuple(p for p in ts_paths.interaction_summaries(config) if f"/{experiment}/" in p)
    timings = run_through_slurm_and_compare(tmp_path, targets, experiment)
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def run_through_slurm_and_compare(
    tmp_path: Path, targets: tuple[str, ...] = (), experiment: str | None = None
) -> dict:
    """Run the smoke workflow (or ``targets``) through a local SLURM cluster, check that every
    job went through sbatch, and compare its training results (of ``experiment``, or all) with
    a local run."""
    timings = {}
    expected = dry_run(SMOKE, targets)
    config = load_config(REPO / SMOKE)
    summaries = [s for s in ts_paths.run_summaries(config) if experiment in (None, s.split("/")[1])]

    # reference: the training runs, locally (CUDA_VISIBLE_DEVICES unset: rule shells must cope
    # under set -u); the later stages add nothing to compare
    local = copy_repo(tmp_path / "local")
    timings["local run"] = run_snakemake(
        [*summaries, "--cores", "2", "--configfile", SMOKE],
        local,
        workflow_env(),
        tmp_path / "local.log",
    )

    # the workflow through SLURM: every job submitted with sbatch, GPU jobs (gpus_per_job=1)
    # on two fake GPUs; an sbatch wrapper first on PATH records each submission
    repo = copy_repo(tmp_path / "slurm")
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch-calls.tsv"
    bin_dir.mkdir()
    real_sbatch = shutil.which("sbatch")
    (bin_dir / "sbatch").write_text(SBATCH_WRAPPER.format(real=real_sbatch, record=record))
    (bin_dir / "sbatch").chmod(0o755)
    cluster = LocalSlurm(tmp_path / "cluster", gpus=2)
    start = time.monotonic()
    cluster.start()
    timings["cluster start"] = time.monotonic() - start
    try:
        env = workflow_env(**cluster.env)
        env["PATH"] = os.pathsep.join([str(bin_dir), str(cluster.bin_dir), env["PATH"]])
        args = [
            *targets, "--profile", "profiles/slurm", "--configfile", SMOKE,
            "--config", "gpus_per_job=1",
            "--jobs", "8", "--retries", "0",
            # no accounting database here: job states come from squeue (MinJobAge=3600)
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2",
            "--slurm-keep-successful-logs",
        ]  # fmt: skip
        timings["SLURM run"] = run_snakemake(args, repo, env, tmp_path / "slurm.log")
        queue = cluster.run(
            ["squeue", "--states=all", "--noheader", "-O", "JobID:20,State:20,tres-per-job:80"]
        )
    finally:
        cluster.stop()
    assert not cluster.processes

    # every job that runs a command went through sbatch, exactly once, and completed
    calls = [line.split("\t") for line in record.read_text().splitlines()]
    submitted = Counter(c.removeprefix("rule_").split("_wildcards_")[0] for _, c in calls)
    assert submitted == Counter(job.rule for job in expected.jobs if job.files("output"))
    states = {line.split()[0]: line.split()[1:] for line in queue.splitlines() if line.strip()}
    job_ids = [job_id for job_id, _ in calls]
    assert all(states[j][0] == "COMPLETED" for j in job_ids), states
    gpu_rules = {f"rule_{r}" for r in rules_requesting_a_gpu()}
    for job_id, comment in calls:  # training and extraction hold a GPU, nothing else does
        holds_gpu = "gres:gpu:1" in states[job_id][1]
        assert holds_gpu == (comment.split("_wildcards_")[0] in gpu_rules), (comment, states)
    slurm_logs = {p.stem for p in (repo / "logs" / "slurm").rglob("*.log")}
    assert set(job_ids) <= slurm_logs, "each SLURM job leaves its log under logs/slurm/"
    for job in expected.jobs:
        for log in job.files("log"):
            assert (repo / log).is_file(), f"{job.rule}: rule log {log} missing"

    # concurrent jobs kept to their own files and cleaned up their temporary ones
    racy = undeclared_shared_files(repo, expected.jobs)
    assert not racy, f"undeclared files in directories several jobs write to: {racy}"
    leftovers = [str(p) for top in ("data", "runs", "interactions", "results")
                 for p in (repo / top).rglob("*.tmp")]  # fmt: skip
    assert not leftovers, f"temporary files left behind by finished jobs: {leftovers}"

    # the same results: checkpoints byte for byte, and every run's summary
    checkpoints = digests(local, "runs/**/*.safetensors")
    through_slurm = digests(repo, "runs/**/*.safetensors")  # also holds the analyses' extra runs
    assert checkpoints and {k: through_slurm.get(k) for k in checkpoints} == checkpoints
    for summary in summaries:
        assert json.loads((repo / summary).read_text()) == json.loads(
            (local / summary).read_text()
        ), summary
    return timings
