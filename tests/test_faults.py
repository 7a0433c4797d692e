"""Faults a long study meets, and the recovery each must show.

Each test injects one fault the way it happens (a job killed with SIGKILL between two writes, a
typo in a setting, a second writer on a run directory, a truncated checkpoint, a fresh clone of
the committed repository) and asserts: the message names the fault and the one command that
fixes it, nothing finished is lost, nothing wrong looks finished (bytes against an uninterrupted
run), and the rerun recomputes only what was missing. Kills are deterministic: the environment
variable ``TRANSFERSCOPE_FAULT`` names the point where the job SIGKILLs itself
(``transferscope.io.fault_point``). The README's reliability table summarises these tests.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from transferscope import training
from transferscope.config import ConfigError, interaction_settings, run_settings, validate_config
from transferscope.interactions import extract as ex
from transferscope.io import FAULT_ENV, read_json
from transferscope.training import checkpoint_path, read_resume, train_run

from .conftest import ROOT

EXP = "digits_resnet"
EPOCHS = 3  # scratch: a kill in epoch 2 leaves epochs 0 and 1 finished
RUN_FILES = ("metrics.csv", "resume.pt", "settings.json", "summary.json")


@pytest.fixture(scope="module")
def config(smoke_config):
    config = copy.deepcopy(smoke_config)
    config["training"]["scratch"]["epochs"] = EPOCHS
    for regime in ("pretrain", "probe", "finetune"):
        config["training"][regime]["epochs"] = 1
    return config


def scratch_settings(config) -> dict:
    return run_settings(config, EXP, "scratch", 0)


def run_bytes(run: Path) -> dict[str, bytes]:
    """Every file of a finished run that a user or a later stage reads."""
    names = [*RUN_FILES, *(checkpoint_path(run, e).name for e in range(EPOCHS + 1))]
    return {name: (run / name).read_bytes() for name in names if (run / name).exists()}


@pytest.fixture(scope="module")
def reference(config, prepared, tmp_path_factory) -> Path:
    """An uninterrupted scratch run: what every recovered run must equal byte for byte."""
    run = tmp_path_factory.mktemp("reference") / "scratch"
    train_run(scratch_settings(config), prepared["digits"], run, threads=1, progress=False)
    return run


def fault_env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    return env | ({FAULT_ENV: fault} if fault else {})


def cli_command(settings: dict, data: Path, run: Path) -> list[str]:
    """`transferscope train` as a rule runs it."""
    cmd = [str(Path(sys.executable).parent / "transferscope"), "train"]
    cmd += ["--settings", json.dumps(settings), "--data", str(data), "--out", str(run)]
    return cmd + ["--threads", "1", "--quiet"]


def cli_train(settings: dict, data: Path, run: Path, fault: str | None = None):
    """The training job in its own process; ``fault``: where it dies."""
    cmd = cli_command(settings, data, run)
    return subprocess.run(cmd, env=fault_env(fault), capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- kill -9 in training


def test_kill_between_checkpoint_and_resume_state_resumes_from_the_newest_intact_epoch(
    config, prepared, reference, tmp_path
):
    """SIGKILL after epoch 2's checkpoint, before its resume.pt: the rerun resumes from epoch 1
    (not 0), sweeps the temporaries a killed writer leaves, and ends byte-identical."""
    run = tmp_path / "scratch"
    killed = cli_train(scratch_settings(config), prepared["digits"], run, "checkpoint-written:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint_path(run, 2).is_file() and not (run / "summary.json").exists()
    assert read_resume(run)["epoch"] == 1
    (run / ".resume.pt.k1ll3d.tmp").write_bytes(b"half an archive")  # a kill inside a write
    finished = {e: checkpoint_path(run, e).stat().st_mtime_ns for e in (0, 1)}

    rerun = cli_train(scratch_settings(config), prepared["digits"], run)
    assert rerun.returncode == 0, rerun.stderr
    assert {e: checkpoint_path(run, e).stat().st_mtime_ns for e in (0, 1)} == finished
    assert run_bytes(run) == run_bytes(reference)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_kill_between_metrics_and_resume_state_retrains_one_epoch(
    config, prepared, reference, tmp_path, monkeypatch
):
    """Killed after epoch 2's metrics row, before its resume.pt: the row of epoch 2 is not
    kept twice and the run ends byte-identical."""

    def die(name):
        if name == "metrics-written:2":
            raise KeyboardInterrupt(name)

    run = tmp_path / "scratch"
    monkeypatch.setattr(training, "fault_point", die)
    with pytest.raises(KeyboardInterrupt):
        train_run(scratch_settings(config), prepared["digits"], run, threads=1, progress=False)
    monkeypatch.undo()
    assert read_resume(run)["epoch"] == 1
    assert training.completed_epochs(run, read_json(run / "settings.json")["hash"]) == 1
    train_run(scratch_settings(config), prepared["digits"], run, threads=1, progress=False)
    assert run_bytes(run) == run_bytes(reference)


def test_resume_state_is_byte_reproducible(config, prepared, reference, tmp_path):
    """torch.save to a file records the (random) temporary name inside the archive; resume.pt
    must not, or DVC sees runs/ modified after an identical rerun."""
    run = tmp_path / "again"
    train_run(scratch_settings(config), prepared["digits"], run, threads=1, progress=False)
    assert (run / "resume.pt").read_bytes() == (reference / "resume.pt").read_bytes()


def test_a_garbage_settings_file_retrains_instead_of_looping(config, prepared, reference, tmp_path):
    """settings.json is what a run's checkpoints are trusted by: unreadable, the run retrains
    (its old advice, "delete it and rerun its stage", did not make Snakemake rerun it)."""
    run = shutil.copytree(reference, tmp_path / "scratch")
    (run / "settings.json").write_text('{"hash": "half-writ')
    train_run(scratch_settings(config), prepared["digits"], run, threads=1, progress=False)
    assert run_bytes(run) == run_bytes(reference)


# --------------------------------------------------------------------------- settings


def test_a_model_typo_leaves_the_finished_run_intact(config, prepared, reference, tmp_path):
    run = shutil.copytree(reference, tmp_path / "scratch")
    before = run_bytes(run)
    settings = scratch_settings(config)
    settings["model"]["name"] = "resnet10tt"
    with pytest.raises(ValueError, match="timm does not know model 'resnet10tt'"):
        train_run(settings, prepared["digits"], run, threads=1, progress=False)
    assert run_bytes(run) == before


def _set(path: str, value):
    def edit(config):
        *parents, key = path.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("models.resnet.name", "resnet10tt"), "models.resnet.name.*'resnet10tt'.*resnet10t"),
        (_set("models.resnet.name", "resnet10t.no_such_tag"), "no pretrained tag 'no_such_tag'"),
        (_set("models.minilm.name", "package:no_such_pkg/model"), "no_such_pkg.*not installed"),
        (_set("interactions.baseline", "black"), "'black' does not apply to the text players"),
        (_set("interactions.baseline", "mask"), "'mask' does not apply to the image players"),
        (_set("interactions.tau", 2), "interactions.tau"),
        (_set("interactions.tau", 1), "interactions.tau"),
        (_set("theory.instancess", 2), "Additional properties.*instancess"),
        (_set("theory.relu.mu", [0.0]), "Additional properties.*'mu'"),
        (_set("theory.d", 1), "theory.d"),
    ],
)
def test_settings_that_would_run_wrong_stop_before_any_job(smoke_config, edit, message):
    """Each was accepted and failed inside a job (or finished with NaN, or was ignored)."""
    raw = copy.deepcopy(smoke_config)
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        validate_config(raw, source="smoke.yaml")


# --------------------------------------------------------------------------- two writers


def test_a_second_writer_on_a_run_directory_is_refused_naming_the_holder(
    config, prepared, reference, tmp_path
):
    """An orphaned training job still alive (stopped after epoch 1 here, as when only its
    Snakemake was killed) and a rerun on the same run: the rerun is refused naming the orphan's
    PID, and the orphan, resumed, finishes a run identical to an uninterrupted one."""
    run = tmp_path / "scratch"
    orphan = subprocess.Popen(
        cli_command(scratch_settings(config), prepared["digits"], run),
        env=fault_env("checkpoint-written:1@stop"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_stopped(orphan.pid)
        second = cli_train(scratch_settings(config), prepared["digits"], run)
        assert second.returncode == 1, second.stderr
        message = second.stderr.strip().splitlines()[-1]
        assert f"is being written by pid {orphan.pid}; one writer per run directory" in message
        assert not (run / "summary.json").exists()
    finally:
        os.kill(orphan.pid, signal.SIGCONT)
    assert orphan.wait(timeout=600) == 0, orphan.stderr.read()
    assert run_bytes(run) == run_bytes(reference)


def wait_until_stopped(pid: int, timeout: float = 300) -> None:
    """Block until process ``pid`` is in the stopped state (Linux /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        if state in ("Z", "X"):
            raise AssertionError(f"process {pid} exited before its fault point")
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not reach its fault point in {timeout} s")


# --------------------------------------------------------------------------- corrupt checkpoint


@pytest.fixture(scope="module")
def extracted(config, prepared, tmp_path_factory):
    """Probe, fine-tune and scratch runs of seed 0 (one epoch each) and their interactions."""
    root = tmp_path_factory.mktemp("corrupt")
    config = copy.deepcopy(config)
    config["training"]["scratch"]["epochs"] = 1

    def train(regime, init=None):
        settings = run_settings(config, EXP, regime, 0)
        return train_run(settings, prepared["digits"], root / regime, init, 1, progress=False)

    final = checkpoint_path(train("pretrain"), 1)
    runs = {"probe": train("probe", final), "finetune": train("finetune", final)}
    runs["scratch"] = train("scratch")
    settings = interaction_settings(config, EXP, 0)
    ex.extract(settings, prepared["digits"], runs, root / "interactions", progress=False)
    return config, runs, root / "interactions"


def test_a_truncated_checkpoint_does_not_keep_its_stale_cache(extracted, prepared):
    config, runs, out = extracted
    victim = checkpoint_path(runs["finetune"], 1)
    original = victim.read_bytes()
    caches = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    victim.write_bytes(original[: len(original) // 2])

    settings = interaction_settings(config, EXP, 0)
    fix = f"snakemake --cores all --forcerun {runs['finetune'] / 'summary.json'}"
    with pytest.raises(
        ValueError, match="epoch_001.safetensors is not the file its run wrote"
    ) as err:
        ex.extract(settings, prepared["digits"], runs, out, progress=False)
    assert fix in str(err.value)
    assert not (out / "summary.json").exists()  # nothing downstream looks finished

    # what the named command runs: the fine-tune job, which retrains only the broken epoch
    epoch0 = checkpoint_path(runs["finetune"], 0).stat().st_mtime_ns
    finetune = run_settings(config, EXP, "finetune", 0)
    init = checkpoint_path(runs["probe"].parent / "pretrain", 1)
    train_run(finetune, prepared["digits"], runs["finetune"], init, 1, progress=False)
    assert victim.read_bytes() == original
    assert checkpoint_path(runs["finetune"], 0).stat().st_mtime_ns == epoch0
    summary = read_json(ex.extract(settings, prepared["digits"], runs, out, progress=False))
    assert summary["computed"] == 0  # the same bytes again: every cache is still valid
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == caches


# --------------------------------------------------------------------------- a fresh clone


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The committed repository as a user gets it (git clone of HEAD)."""
    dest = tmp_path_factory.mktemp("clone") / "transferscope"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_no_dvc_cached_output_is_committed_to_git(fresh_clone):
    """`dvc repro` on a fresh clone stopped after the knowledge stage's jobs with "output
    'results/knowledge/transfer.parquet' is already tracked by SCM": committed results must be
    `cache: false`. `dvc commit` saves the outputs the way `dvc repro` does after a stage's
    command, without running it (the upstream directories are placeholders here)."""
    from dvc.repo import Repo

    with Repo(str(fresh_clone)) as repo:
        both = [
            str(out.def_path)
            for stage in repo.index.stages
            for out in stage.outs
            if out.use_scm_ignore and repo.scm.is_tracked(out.fspath)
        ]
        results = {  # the stages that write results/, and their outputs
            stage.name: [str(out.def_path) for out in stage.outs]
            for stage in repo.index.stages
            if all(str(out.def_path).startswith("results/") for out in stage.outs)
        }
    assert both == [], f"cached by DVC and committed to git: {both}"
    assert len(results) >= 4, results  # knowledge, figures, theory, analyses at least
    placeholders = ["data", "runs", "interactions"]  # upstream directories
    placeholders += [out for outs in results.values() for out in outs]  # not committed yet
    for path in map(fresh_clone.joinpath, placeholders):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir() if not path.suffix else path.write_text("")
            if path.is_dir():
                (path / "placeholder").write_text("")
    saved = dvc(["dvc", "commit", "--force", *sorted(results)], fresh_clone)
    assert saved.returncode == 0 and "already tracked" not in saved.stdout, saved.stdout


def test_pull_without_a_remote_says_how_to_add_one(fresh_clone):
    pulled = dvc([sys.executable, "-m", "transferscope.dvc", "pull"], fresh_clone)
    assert pulled.returncode != 0
    assert "no DVC remote" in pulled.stdout and "dvc remote add -d" in pulled.stdout, pulled.stdout
    assert len(pulled.stdout.splitlines()) <= 3, pulled.stdout


def test_a_stale_snakemake_lock_is_answered_with_unlock(tmp_path):
    from transferscope import dvc as glue

    assert glue._lock_advice(tmp_path) == ""
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("runs/x/summary.json\n")
    assert "`snakemake --unlock`" in glue._lock_advice(tmp_path)


def test_a_changed_theory_block_reruns_the_committed_theory_on_a_fresh_clone(tmp_path):
    """Committed results/theory has no Snakemake record in a clone: Snakemake's params trigger
    cannot see a changed `theory:` block, so the workflow compares the settings theory.json
    recorded with the config's (rules/theory.smk)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    target = "results/theory/theory.json"

    def planned() -> str:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", target], cwd=clone, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    assert "Nothing to be done" in planned()  # as committed: up to date
    config = clone / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["theory"] = {"d": 100}
    time.sleep(0.01)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = planned()
    assert "rule theory:" in out and "Updated input files: config.yaml" in out, out
