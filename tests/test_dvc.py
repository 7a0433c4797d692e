"""DVC over Snakemake (docs/dvc.md) on the smoke config.

dvc.yaml and the Snakemake DAG name the same files; `dvc repro` runs the experiment once and then
nothing; a parameter change reruns only what depends on it, in DVC and in Snakemake; push, fresh
clone, pull restores everything so that neither tool recomputes; corrupted objects, a missing
remote and a second concurrent `dvc repro` fail loudly.

The slow tests share one workspace (a git repo in a temporary directory holding the project's
workflow files with config/smoke.yaml as config.yaml) and one expensive `dvc repro`; they run in
file order and build on each other's state.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from transferscope import dvc as glue
from transferscope import tuning as ts_tuning
from transferscope import workflow as ts_paths
from transferscope.analyses import settings as ts_analyses
from transferscope.config import REGIMES, load_config, run_settings

ROOT = Path(__file__).resolve().parents[1]
# Outputs, caches and tool state of the source checkout: never copied into a test workspace.
NOT_COPIED = {
    ".git", ".venv", ".snakemake", ".pytest_cache", ".ruff_cache", "__pycache__",
    "data", "runs", "interactions", "logs", "results", "dvc.lock",
    "src", "tests", "benchmarks",
}  # fmt: skip
NOT_COPIED_IN_DVC = {"cache", "tmp", "config.local"}
# DVC's lock messages: the repository lock, or (while a stage's command runs, when DVC holds
# read/write locks on that stage's deps and outs only) the lock on a path the second one needs
LOCK_MESSAGE = re.compile(r"Unable to acquire lock|is busy, it is being blocked by")


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(
        os.environ,
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )


def sh(
    cmd: str, cwd: Path, check: bool = True, timeout: float = 1500
) -> subprocess.CompletedProcess:
    """Run a shell command; stdout and stderr together in .stdout."""
    proc = subprocess.run(
        cmd,
        shell=True,
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({proc.returncode}) in {cwd}:\n{proc.stdout[-6000:]}")
    return proc


def make_workspace(dest: Path, config: str = "config/smoke.yaml") -> Path:
    """The project's workflow files and its committed results in a new git repo, with
    ``config`` as config.yaml: as a clone, results/ is in git before DVC sees it."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).resolve()
        skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if here == ROOT:
            skipped |= NOT_COPIED & set(names)
        elif here == ROOT / ".dvc":
            skipped |= NOT_COPIED_IN_DVC & set(names)
        return skipped

    shutil.copytree(ROOT, dest, ignore=ignore)
    committed = subprocess.run(
        ["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in committed:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    shutil.copyfile(ROOT / config, dest / "config.yaml")
    sh("git init -q && git add -A && git commit -qm workspace", dest)
    return dest


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def jobs_run(output: str) -> set[str]:
    """Outputs of the Snakemake jobs a log announces (rule blocks of a run or a dry run)."""
    outputs, in_job = set(), False
    for line in output.splitlines():
        if re.match(r"^(local)?(rule|checkpoint) \S+:$", line):
            in_job = True
        elif in_job and line.startswith("    output: "):
            outputs.update(line[len("    output: ") :].split(", "))
        elif not line.startswith("    "):
            in_job = False
    return outputs


def lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# --------------------------------------------------------------------------- fast: the DAGs


@pytest.mark.parametrize("config", ["config.yaml", "config/smoke.yaml"])
def test_dvc_yaml_and_snakemake_name_the_same_files(tmp_path, config):
    """Every file of Snakemake's DAG lies in exactly one output of dvc.yaml, every dvc.yaml
    output holds a Snakemake output, and every params key dvc.yaml names exists in the config."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    ws = make_workspace(tmp_path / "ws", config)
    snakemake_files = glue.workflow_outputs(ws)
    assert snakemake_files, "Snakemake's default target needs no job?"
    declared = glue.dvc_outputs(ws)
    outs = [(stage, path) for stage, paths in declared.items() for path in paths]

    owners = {f: [(s, p) for s, p in outs if glue.under(f, p)] for f in snakemake_files}
    orphans = sorted(f for f, o in owners.items() if not o)
    assert not orphans, f"produced by Snakemake ({config}) but in no dvc.yaml output: {orphans}"
    twice = {f: o for f, o in owners.items() if len(o) > 1}
    assert not twice, f"in two dvc.yaml outputs: {twice}"
    empty = sorted(
        f"{s}: {p}" for s, p in outs if not any(glue.under(f, p) for f in snakemake_files)
    )
    assert not empty, (
        f"dvc.yaml outputs that the Snakemake workflow ({config}) never writes: {empty}"
    )

    params = yaml.safe_load((ws / "config.yaml").read_text())
    with Repo(str(ws)) as repo:
        for stage in repo.index.stages:
            assert stage.cmd == f"python -m transferscope.dvc run {stage.name}", stage
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    assert Path(dep.def_path).name == "config.yaml", (stage, dep.def_path)
                    missing = []
                    for key in dep.params:
                        try:
                            lookup(params, key)
                        except (KeyError, TypeError):
                            missing.append(key)
                    assert not missing, (
                        f"{config}: stage {stage.name} tracks {missing}, which the file does "
                        "not spell out (DVC cannot track a key filled in by schema defaults)"
                    )


def test_run_refuses_an_unknown_stage(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    proc = sh(f"{sys.executable} -m transferscope.dvc run nosuchstage", ws, check=False)
    assert proc.returncode != 0
    assert "nosuchstage" in proc.stdout and "not found" in proc.stdout


def test_fingerprints_follow_content_not_timestamps(tmp_path, monkeypatch):
    """The ledger trusts an artefact while its content is what Snakemake wrote here, whatever
    DVC does to modification times, and distrusts it once anything else replaced it."""
    monkeypatch.chdir(tmp_path)
    run = Path("runs/e/finetune/seed0")
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "epoch_000.safetensors").write_bytes(b"weights")
    (run / ".epoch_001.safetensors.x.tmp").write_bytes(b"half-written")
    figure = Path("results/figures/a.png")
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    outputs = [str(run / "summary.json"), str(figure), "results/figures/missing.png"]
    assert glue.foreign(outputs) == sorted(outputs[:2])  # no ledger yet: nothing is trusted
    glue.record(outputs)
    assert glue.foreign(outputs) == []
    os.utime(figure, (1, 1))  # a copy with the same bytes (DVC relinking after a stage)
    (run / ".epoch_001.safetensors.x.tmp").write_bytes(b"more")  # ignored, as by .dvcignore
    assert glue.foreign(outputs) == []
    (run / "epoch_000.safetensors").write_bytes(b"other weights")  # a checkout of another run
    assert glue.foreign(outputs) == [str(run / "summary.json")]
    assert glue.jobs_under({"runs/e/x/summary.json": "r", "runs/ee/y": "s"}, ["runs/e"]) == {
        "runs/e/x/summary.json": "r"
    }


# --------------------------------------------------------------------------- slow: one workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("dvc") / "ws")


@pytest.fixture(scope="module")
def first_repro(workspace):
    return sh("dvc repro", workspace).stdout


@pytest.mark.slow
def test_repro_runs_everything_once(workspace, first_repro):
    every_stage = set(glue.dvc_outputs(workspace))
    assert stages_run(first_repro) == every_stage
    again = sh("dvc repro", workspace).stdout
    assert not stages_run(again), again
    assert json.loads(sh("dvc status --json", workspace).stdout or "{}") == {}
    assert "Nothing to be done" in sh("snakemake -n", workspace).stdout
    sh(f"{sys.executable} -m transferscope.dvc verify", workspace)
    sh("git add -A && git commit -qm repro", workspace)


def expected_reruns(workspace: Path, change) -> set[str]:
    """Snakemake outputs a config change must rerun: the runs whose resolved settings change, the
    interaction caches of their (experiment, seed), and every aggregate under results/ that
    reads runs or interactions (all of results/ but the theory lens)."""
    before = load_config(workspace / "config.yaml")
    after = copy.deepcopy(before)
    change(after)
    runs = {
        (exp, regime, seed)
        for exp in before["experiments"]
        for regime in REGIMES
        for seed in before["seeds"]
        if run_settings(before, exp, regime, seed) != run_settings(after, exp, regime, seed)
    }
    assert runs, "the change alters no run"
    files = {f"runs/{e}/{r}/seed{s}/summary.json" for e, r, s in runs}
    # the honest-baseline searches whose own settings change (their table lives under results/)
    searches = {
        (exp, regime)
        for exp in before["experiments"]
        for regime in ("finetune", "scratch")
        if ts_tuning.search_settings(before, exp, regime)
        != ts_tuning.search_settings(after, exp, regime)
    }
    files |= {ts_paths.tuning_choice(e, r) for e, r in searches}
    files |= {ts_paths.tuning_table(e, r) for e, r in searches}
    # the analyses' extra runs (block-shuffled, from intermediate pre-training epochs)
    for exp in ts_analyses.image_experiments(before):
        for seed in ts_analyses.analysis_seeds(before):
            variants = {
                ts_analyses.shuffle_variant(regime, block): [
                    ts_analyses.shuffle_settings(c, exp, regime, seed, block)
                    for c in (before, after)
                ]
                for regime in ("finetune", "scratch")
                for block in ts_analyses.analyses_params(before)["block_sizes"]
            }
            for epoch in ts_analyses.pretrain_epochs(before, exp):
                variants[ts_analyses.from_variant(epoch)] = [
                    ts_analyses.from_settings(c, exp, seed, epoch) for c in (before, after)
                ]
            files |= {
                f"runs/{exp}/{variant}/seed{seed}/summary.json"
                for variant, (old, new) in variants.items()
                if old != new
            }
    files |= {f"interactions/{e}/seed{s}/summary.json" for e, _, s in runs}
    files |= {
        f
        for f in glue.workflow_outputs(workspace)
        if f.startswith("results/") and not f.startswith(("results/theory/", "results/tuning/"))
    }
    return files


@pytest.mark.slow
def test_a_parameter_reruns_only_what_depends_on_it(workspace, first_repro):
    """`dvc exp run -S training.finetune.lr=…`: smoke's sentiment_minilm overrides that lr, so only
    digits_resnet's two fine-tune runs retrain, then their interactions and the aggregates; the
    same jobs Snakemake itself plans for the same change."""
    key, value = "training.finetune.lr", 0.002
    expected = expected_reruns(workspace, lambda c: c["training"]["finetune"].update(lr=value))

    # Snakemake alone, same change (dry run): the same plan
    original = (workspace / "config.yaml").read_text()
    changed = yaml.safe_load(original)
    changed["training"]["finetune"]["lr"] = value
    (workspace / "config.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    planned = jobs_run(sh("snakemake -n", workspace).stdout)
    (workspace / "config.yaml").write_text(original)
    assert planned == expected

    out = sh(f"dvc exp run -S config.yaml:{key}={value}", workspace).stdout
    assert jobs_run(out) == expected, out
    assert stages_run(out) == {
        "train@digits_resnet",
        "train@sentiment_minilm",  # DVC: it tracks `training`; Snakemake: nothing changed there
        "interactions@digits_resnet",
        "knowledge",
        "figures",
        "analyses",
        "claims",
    }
    assert lookup(yaml.safe_load((workspace / "config.yaml").read_text()), key) == value
    assert json.loads(sh("dvc status --json", workspace).stdout or "{}") == {}

    # what the experiment reports
    metrics = json.loads(sh("dvc metrics show --json", workspace).stdout)
    assert "results/metrics.json" in json.dumps(metrics)
    sh("dvc metrics diff HEAD --json", workspace)
    exps = json.dumps(json.loads(sh("dvc exp show --json", workspace).stdout))
    assert f'"lr": {value}' in exps
    plots = sh("dvc plots show --json", workspace).stdout
    assert "results/knowledge/convergence.csv" in plots
    assert "results/figures/training_curves.png" in plots
    sh("git add -A && git commit -qm 'finetune lr'", workspace)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]  # the IHDR chunk: width, height
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


@pytest.mark.slow
def test_outputs_restored_by_dvc_are_not_trusted_blindly(workspace, first_repro):
    """Snakemake's records outlive a `dvc checkout`: draw the figures at another dpi, check out
    the committed ones, ask for that dpi again. Snakemake alone would find its record equal to
    the config and keep the checked-out files; the stage must redraw them."""
    figures = sorted(glue.dvc_outputs(workspace)["figures"])
    committed = yaml.safe_load((workspace / "config.yaml").read_text())
    dpi = committed["figures"]["dpi"] - 30
    sh(f"dvc exp run -S config.yaml:figures.dpi={dpi}", workspace)
    at_dpi = {f: png_size(workspace / f) for f in figures}
    # results/ is cache: false (committed to git): git restores it, DVC the rest
    restore = "git checkout -- config.yaml dvc.lock results && dvc checkout --force"
    sh(restore, workspace)
    assert {f: png_size(workspace / f) for f in figures} != at_dpi
    committed["figures"]["dpi"] = dpi
    (workspace / "config.yaml").write_text(yaml.safe_dump(committed, sort_keys=False))
    out = sh("dvc repro", workspace).stdout
    # the analyses draw their figures at the same dpi; the claims read the analyses' directory
    assert stages_run(out) == {"figures", "analyses", "claims"} and "forcing" in out, out
    assert {f: png_size(workspace / f) for f in figures} == at_dpi
    sh(restore, workspace)
    assert json.loads(sh("dvc status --json", workspace).stdout or "{}") == {}


@pytest.fixture(scope="module")
def remote(workspace, tmp_path_factory):
    storage = tmp_path_factory.mktemp("remote") / "storage"
    sh(f"dvc remote add -d storage {storage} && git add -A && git commit -qm remote", workspace)
    sh("dvc push", workspace)
    return storage


def clone(workspace: Path, dest: Path) -> Path:
    sh(f"git clone -q {workspace} {dest}", dest.parent)
    return dest


@pytest.mark.slow
def test_push_clone_pull_recomputes_nothing(workspace, remote, tmp_path):
    fresh = clone(workspace, tmp_path / "fresh")
    sh(f"{sys.executable} -m transferscope.dvc pull", fresh)
    assert json.loads(sh("dvc status --json", fresh).stdout or "{}") == {}
    assert "Nothing to be done" in sh("snakemake -n", fresh).stdout
    out = sh("dvc repro", fresh).stdout
    assert not stages_run(out), out
    out = sh("snakemake --cores all", fresh).stdout
    assert "Nothing to be done" in out and not jobs_run(out)
    for checkpoint in ("runs/digits_resnet/finetune/seed1/epoch_002.safetensors",):
        assert (fresh / checkpoint).read_bytes() == (workspace / checkpoint).read_bytes()


def object_of(repo: Path, path: str) -> Path:
    """The cache object of one file inside a directory output (via the .dir manifest)."""
    from dvc.repo import Repo

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for info in lock["stages"].values():
        for out in info.get("outs", []):
            if glue.under(path, out["path"]) and out["md5"].endswith(".dir"):
                with Repo(str(repo)) as dvc_repo:
                    cache = dvc_repo.cache.local
                    entries = json.loads(Path(cache.oid_to_path(out["md5"])).read_text())
                    rel = os.path.relpath(path, out["path"])
                    (md5,) = [e["md5"] for e in entries if e["relpath"] == rel]
                    return Path(cache.oid_to_path(md5))
    raise LookupError(path)


def corrupt(path: Path) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(64)
        f.write(b"corrupted!")


@pytest.mark.slow
def test_corrupted_objects_are_reported(workspace, remote, tmp_path):
    victim = "runs/digits_resnet/finetune/seed0/epoch_001.safetensors"
    # a corrupted object in the remote: DVC checks it out silently (and its status stays clean),
    # the project's pull re-hashes and refuses
    bad_remote = tmp_path / "bad-remote"
    shutil.copytree(remote, bad_remote)
    local_object = object_of(workspace, victim)
    corrupt(bad_remote / local_object.relative_to(workspace / ".dvc" / "cache"))
    fresh = clone(workspace, tmp_path / "fresh")
    sh(f"dvc remote add -f --local storage {bad_remote}", fresh)
    proc = sh(f"{sys.executable} -m transferscope.dvc pull", fresh, check=False)
    assert proc.returncode != 0
    assert victim in proc.stdout and "does not match dvc.lock" in proc.stdout, proc.stdout
    # and with verification on the remote, DVC itself refuses the download
    other = clone(workspace, tmp_path / "other")
    sh(f"dvc remote add -f --local storage {bad_remote}", other)
    sh("dvc remote modify --local storage verify true", other)
    proc = sh("dvc pull", other, check=False)
    assert proc.returncode != 0 and "runs/digits_resnet" in proc.stdout, proc.stdout

    # a corrupted object in the local cache, checked out again: reported, never silent
    good = clone(workspace, tmp_path / "good")
    sh("dvc pull", good)
    corrupt(object_of(good, victim))
    (good / victim).unlink()
    sh("dvc checkout", good, check=False)
    proc = sh(f"{sys.executable} -m transferscope.dvc verify", good, check=False)
    assert proc.returncode != 0 and victim in proc.stdout, proc.stdout
    assert "not in cache" in sh("dvc status", good).stdout


@pytest.mark.slow
def test_a_missing_remote_is_a_clear_error(workspace, remote, tmp_path):
    fresh = clone(workspace, tmp_path / "fresh")
    sh("dvc remote remove storage", fresh)
    proc = sh("dvc pull", fresh, check=False)
    assert proc.returncode != 0 and "no default remote" in proc.stdout.lower(), proc.stdout
    proc = sh(f"{sys.executable} -m transferscope.dvc pull", fresh, check=False)
    assert proc.returncode != 0 and "dvc remote add -d" in proc.stdout, proc.stdout
    sh(f"dvc remote add -d gone {tmp_path / 'no-such-storage'}", fresh)
    proc = sh("dvc pull", fresh, check=False)
    assert proc.returncode != 0 and "missing" in proc.stdout.lower(), proc.stdout
    assert not (fresh / "runs").exists() or not any((fresh / "runs").rglob("summary.json"))


@pytest.mark.slow
def test_a_second_concurrent_repro_fails_fast(workspace, first_repro):
    """While the first runs `knowledge` (it reads runs/ and interactions/), the second needs to
    check the train stages: DVC refuses at once, and nothing changes."""
    first = subprocess.Popen(
        "dvc repro --force --single-item knowledge",
        shell=True,
        cwd=workspace,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in first.stdout:  # wait until the first one holds the lock and runs its stage
        lines.append(line)
        if line.startswith("Running stage"):
            break
    started = time.monotonic()
    second = sh("dvc repro", workspace, check=False)
    waited = time.monotonic() - started
    rest, _ = first.communicate(timeout=600)
    assert first.returncode == 0, "".join(lines) + rest
    assert second.returncode != 0 and LOCK_MESSAGE.search(second.stdout), second.stdout
    assert waited < 30
    assert json.loads(sh("dvc status --json", workspace).stdout or "{}") == {}
    sh(f"{sys.executable} -m transferscope.dvc verify", workspace)
