"""DVC over Snakemake: the glue behind every stage of ``dvc.yaml`` (see docs/dvc.md).

DVC decides *which family* of artefacts is out of date (its params, deps and outputs are recorded
in ``dvc.lock``, which travels with git); Snakemake decides *which jobs inside it* rerun (its params,
input and code triggers), runs them in parallel, and remains the single definition of every job.

``python -m transferscope.dvc run STAGE``
    The command of every stage in dvc.yaml. It reads the stage's outputs from dvc.yaml, asks
    Snakemake which jobs write under them, and runs ``snakemake TARGETS --allowed-rules RULES``:
    only that family's jobs may run, so a stage never rewrites another stage's outputs.

    Snakemake's own records (``.snakemake/metadata``) are local to a workspace and are not
    versioned: after ``dvc pull``, ``dvc checkout``, ``dvc exp apply`` or ``git checkout`` they
    describe files that are no longer there, and Snakemake would trust them. So every run notes
    a fingerprint of each job's artefact (the content of its files; size and mtime beyond
    HASH_LIMIT) in a ledger beside them; a job whose artefact no longer matches was written by
    something else, and it is forced (``--forcerun``). Forcing is cheap: training resumes from
    its last checkpoint and interaction extraction reuses its content-addressed caches.
    A lock beside the ledger keeps one writer per workspace.

``python -m transferscope.dvc verify``
    Re-hash every output against dvc.lock: DVC checks out corrupted objects silently.

``python -m transferscope.dvc sync``
    After ``dvc pull`` / ``dvc checkout`` on a clean ``dvc status``: verify, then ``snakemake
    --touch --forceall`` (restores a consistent modification-time order, which DVC does not
    preserve, and records Snakemake's metadata for the current config), then records
    fingerprints. Afterwards neither ``snakemake`` nor ``dvc repro`` recomputes anything.

``python -m transferscope.dvc pull [DVC PULL ARGS]``
    ``dvc pull`` then ``sync``.

``python -m transferscope.dvc outputs``
    Every output of every job of Snakemake's default target, with its rule (tab-separated).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from transferscope.io import LOCK_NAME

STATE_DIR = Path(".snakemake") / "transferscope-dvc"
LEDGER = STATE_DIR / "ledger.json"
LOCK = STATE_DIR / "lock"
# Files inside an artefact that neither DVC (.dvcignore) nor the fingerprint looks at.
IGNORED_NAMES = (".snakemake_timestamp", LOCK_NAME)
IGNORED_SUFFIXES = (".tmp",)
HASH_LIMIT = 16 * 2**20
# Files whose change can alter Snakemake's DAG (the outputs cache is keyed on their content).
WORKFLOW_FILES = ("Snakefile", "rules", "schemas", "config.yaml")
PREFIX = "[transferscope.dvc]"


class DvcGlueError(RuntimeError):
    """A stage cannot run as asked; the message says why and what to do."""


def _say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def snakemake_command() -> list[str]:
    return [sys.executable, "-m", "snakemake"]


def cores() -> str:
    """Cores each stage's Snakemake may use: $TRANSFERSCOPE_CORES, or all of them."""
    return os.environ.get("TRANSFERSCOPE_CORES", "all")


# --------------------------------------------------------------------------- Snakemake's DAG


def _workflow_key(root: Path, configfile: str | None) -> str:
    import snakemake

    import transferscope

    digest = hashlib.sha256(f"snakemake {snakemake.__version__}\n".encode())
    package = Path(transferscope.__file__).parent
    paths: list[Path] = []
    for name in (*WORKFLOW_FILES, *([configfile] if configfile else [])):
        path = root / name
        paths += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    paths += [package / "workflow.py", package / "config.py", package / "config.schema.yaml"]
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()[:24]


def workflow_outputs(root: str | Path = ".", configfile: str | None = None) -> dict[str, str]:
    """{output file: rule} for every job Snakemake's default target needs (``--detailed-summary``).

    Cached under .snakemake/transferscope-dvc/ per content of the workflow files and config.
    """
    root = Path(root)
    cache = root / STATE_DIR / f"dag-{_workflow_key(root, configfile)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    cmd = [*snakemake_command(), "--detailed-summary", "--nolock", "--quiet", "all"]
    if configfile:
        cmd += ["--configfile", configfile]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("output_file\t")), None)
    if proc.returncode != 0 or header is None:
        raise DvcGlueError(
            "could not list the Snakemake workflow's jobs (snakemake --detailed-summary):\n"
            + (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        )
    columns = lines[header].split("\t")
    col_file, col_rule = columns.index("output_file"), columns.index("rule")
    outputs = {}
    for line in lines[header + 1 :]:
        fields = line.split("\t")
        if len(fields) == len(columns):
            outputs[os.path.normpath(fields[col_file])] = fields[col_rule]
    _write_json_atomic(cache, outputs)
    return outputs


def under(path: str, prefix: str) -> bool:
    path, prefix = os.path.normpath(path), os.path.normpath(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def jobs_under(outputs: dict[str, str], paths: Iterable[str]) -> dict[str, str]:
    """The Snakemake outputs (and their rules) that lie in any of ``paths``."""
    paths = list(paths)
    return {f: rule for f, rule in outputs.items() if any(under(f, p) for p in paths)}


# --------------------------------------------------------------------------- DVC's stages


def stage_outputs(stage: str, root: str | Path = ".") -> list[str]:
    """The output paths (outs, metrics, plots) dvc.yaml declares for ``stage`` (templated)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        try:
            (found,) = repo.stage.collect(stage)
        except Exception as err:  # dvc's StageNotFound and friends: one clear line
            raise DvcGlueError(f"stage '{stage}' not found in dvc.yaml: {err}") from None
        return [str(out.def_path) for out in found.outs]


def dvc_outputs(root: str | Path = ".") -> dict[str, list[str]]:
    """{stage name: its declared output paths} for every stage of dvc.yaml (templated)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.name: [str(o.def_path) for o in s.outs] for s in repo.index.stages}


# --------------------------------------------------------------------------- fingerprints


def _ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES)


def artefact(output: str) -> Path:
    """What a job really writes: a run or cache directory whose marker ``summary.json`` Snakemake
    tracks (transferscope.workflow), a directory output, or the file itself."""
    path = Path(output)
    return path.parent if path.name == "summary.json" else path


def fingerprint(output: str) -> str | None:
    """What every file of the job's artefact holds (content hash up to HASH_LIMIT bytes, size
    and mtime beyond: large checkpoints are covered by the hashes in their run's summary.json);
    None when the output is missing. Content, not mtime, because DVC may replace a file by an
    identical copy from its cache after a stage (commit with relink)."""
    if not os.path.lexists(output):
        return None
    top = artefact(output)
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        if _ignored(path.name):
            continue
        st = path.stat()
        if st.st_size <= HASH_LIMIT:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = f"mtime {st.st_mtime_ns}"
        digest.update(f"{path}\0{st.st_size}\0{what}\n".encode())
    return digest.hexdigest()


def load_ledger(root: str | Path = ".") -> dict[str, str]:
    path = Path(root) / LEDGER
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record(
    outputs: Iterable[str], root: str | Path = ".", prints: dict[str, str | None] | None = None
) -> None:
    ledger = load_ledger(root)
    for output in outputs:
        ledger[output] = prints[output] if prints is not None else fingerprint(output)
    _write_json_atomic(Path(root) / LEDGER, ledger)


def foreign(
    outputs: Iterable[str], root: str | Path = ".", prints: dict[str, str | None] | None = None
) -> list[str]:
    """Existing outputs whose artefact changed since this module last recorded it (``prints``:
    their fingerprints, when already computed)."""
    ledger = load_ledger(root)
    prints = prints if prints is not None else {o: fingerprint(o) for o in outputs}
    return sorted(o for o in outputs if prints[o] is not None and ledger.get(o) != prints[o])


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- integrity


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(root: str | Path = ".") -> list[str]:
    """Re-hash every cached output in the workspace against dvc.lock; the problems found.

    DVC records the hash it *meant* to check out, not the one it wrote: a corrupted object in
    the remote (unless the remote has ``verify = true``) or in the local cache is checked out
    silently, and ``dvc status`` stays clean. This reads every file once. Outputs with
    ``cache: false`` (results/, committed to git) are git's to verify: DVC keeps no copy of them.
    """
    import yaml
    from dvc.repo import Repo

    root = Path(root)
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    problems: list[str] = []
    with Repo(str(root)) as repo:
        cache = repo.cache.local
        uncached = {str(o.def_path) for s in repo.index.stages for o in s.outs if not o.use_cache}
        for stage, info in sorted(lock.get("stages", {}).items()):
            for out in info.get("outs", []):
                path, md5 = root / out["path"], out.get("md5")
                if md5 is None or out["path"] in uncached:
                    continue
                if not md5.endswith(".dir"):
                    expected = {path: md5}
                else:
                    manifest = Path(cache.oid_to_path(md5))
                    try:
                        entries = json.loads(manifest.read_text())
                    except (OSError, json.JSONDecodeError):
                        problems.append(f"{out['path']}: directory manifest {md5} not in cache")
                        continue
                    expected = {path / e["relpath"]: e["md5"] for e in entries}
                for file, want in expected.items():
                    rel = os.path.relpath(file, root)
                    if not file.is_file():
                        problems.append(f"{rel}: missing (stage {stage})")
                    elif _md5(file) != want:
                        problems.append(f"{rel}: content does not match dvc.lock (stage {stage})")
    return problems


def check_integrity() -> None:
    problems = verify()
    if problems:
        shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DvcGlueError(
            f"{len(problems)} file(s) in the workspace differ from what dvc.lock records "
            f"(missing, or a corrupted cache or remote object):\n  {shown}\n"
            "Remove those files and `dvc pull` again: DVC drops a corrupted local cache object "
            "when it notices it, and fetches an intact copy. If the remote object is the "
            "corrupted one, rerun the stage (`dvc repro -f STAGE`) and `dvc push`. Setting "
            "`dvc remote modify NAME verify true` makes DVC refuse corrupted downloads itself."
        )
    _say("every cached output matches dvc.lock")


# --------------------------------------------------------------------------- commands
def workspace_lock(root: str | Path = "."):
    """One writer per workspace. DVC releases its repository lock while a stage's command runs
    and keeps read/write locks on that stage's paths only; this lock covers the rest (the
    ledger, Snakemake's records) so that a second writer fails at once instead of racing."""
    from transferscope.io import exclusive_lock

    def busy(holder: str) -> DvcGlueError:
        return DvcGlueError(
            f"this workspace is busy ({holder}); one writer per workspace: wait for it, or "
            "use `dvc exp run --queue` / a second clone to run experiments side by side"
        )

    return exclusive_lock(Path(root) / LOCK, busy, f"pid {os.getpid()}: {' '.join(sys.argv)}")


def run_stage(stage: str, extra: Sequence[str] = ()) -> None:
    """Bring the outputs of one dvc.yaml stage up to date with Snakemake (see module docstring)."""
    env_stage = os.environ.get("DVC_STAGE")
    if env_stage and env_stage != stage:
        raise DvcGlueError(f"dvc runs stage '{env_stage}' but its cmd names '{stage}'")
    declared = stage_outputs(stage)
    jobs = jobs_under(workflow_outputs(), declared)
    uncovered = [p for p in declared if not any(under(f, p) for f in jobs)]
    if uncovered:
        raise DvcGlueError(
            f"stage '{stage}': no Snakemake job of the default target writes {uncovered}; "
            "dvc.yaml and the Snakemake workflow disagree (see tests/test_dvc.py)"
        )
    before = {o: fingerprint(o) for o in jobs}
    forced = foreign(jobs, prints=before)
    cmd = [*snakemake_command(), *sorted(jobs), "--cores", cores()]
    cmd += ["--allowed-rules", *sorted(set(jobs.values()))]
    if forced:
        _say(
            f"{stage}: {len(forced)} output(s) were not written by Snakemake in this workspace "
            "(dvc pull/checkout, or a run outside dvc); forcing their jobs, which resume or "
            "reuse what is already there: " + " ".join(forced)
        )
        cmd += ["--forcerun", *forced]
    cmd += list(extra)
    _say(f"{stage}: {len(jobs)} Snakemake output(s) under {' '.join(declared)}")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise DvcGlueError(
            f"stage '{stage}': snakemake failed (exit {proc.returncode}){_lock_advice()}"
        )
    missing = [o for o in jobs if not os.path.lexists(o)]
    if missing:
        raise DvcGlueError(f"stage '{stage}': snakemake succeeded but did not write {missing}")
    after = {o: fingerprint(o) for o in jobs}
    record(jobs, prints=after)
    updated = [o for o in sorted(jobs) if after[o] != before[o]]
    _say(f"{stage}: updated {len(updated)} of {len(jobs)}: " + (" ".join(updated) or "-"))


def _lock_advice(root: str | Path = ".") -> str:
    """What to do when Snakemake's directory lock (left by a killed run) stopped it."""
    locks = Path(root) / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        return (
            "; Snakemake's lock on this directory is held: if no snakemake process runs here "
            "(a killed run leaves it), run `snakemake --unlock`, then rerun"
        )
    return ""


def dvc_status_clean() -> tuple[bool, str]:
    proc = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        return False, proc.stderr.strip() or proc.stdout.strip()
    try:
        status = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return False, proc.stdout.strip()
    return not status, json.dumps(status, indent=1)


def sync(check: bool = True, integrity: bool = True) -> None:
    """Make Snakemake agree with the outputs DVC restored (see module docstring)."""
    if integrity:
        check_integrity()
    if check:
        clean, detail = dvc_status_clean()
        if not clean:
            raise DvcGlueError(
                "dvc status is not clean, so the outputs in the workspace do not match dvc.lock "
                "and config.yaml; refusing to mark them up to date for Snakemake. Run `dvc pull` "
                "(or `dvc checkout`) and/or `dvc repro` first.\n" + detail
            )
    outputs = workflow_outputs()
    missing = sorted(o for o in outputs if not os.path.lexists(o))
    if missing:
        raise DvcGlueError(f"missing outputs, run `dvc pull` or `dvc repro` first: {missing}")
    cmd = [*snakemake_command(), "--touch", "--forceall", "--cores", "1", "--quiet", "all"]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise DvcGlueError(f"snakemake --touch failed (exit {proc.returncode}){_lock_advice()}")
    record(outputs)
    _say(f"Snakemake metadata and modification times match {len(outputs)} outputs")


def has_remote(args: Sequence[str]) -> bool:
    """Whether ``dvc pull ARGS`` has a remote to pull from (``-r NAME`` or a default one)."""
    if any(a in ("-r", "--remote") or a.startswith("--remote=") for a in args):
        return True
    return subprocess.run(["dvc", "remote", "default"], capture_output=True).returncode == 0


def pull(args: Sequence[str]) -> None:
    if not has_remote(args):
        raise DvcGlueError(
            "no DVC remote is configured, so there is nothing to pull from; add the team's "
            "storage once: `dvc remote add -d storage <path or s3://... or ssh://...>` "
            "(docs/dvc.md), or run `dvc repro` to compute everything here"
        )
    proc = subprocess.run(["dvc", "pull", *args])
    if proc.returncode != 0:
        raise DvcGlueError(f"dvc pull failed (exit {proc.returncode}); nothing was synced")
    sync()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m transferscope.dvc", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="bring one dvc.yaml stage up to date (a stage's cmd)")
    run.add_argument("stage")
    run.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="passed to snakemake")
    sync_p = sub.add_parser(
        "sync", help="after dvc pull/checkout: Snakemake agrees nothing is to do"
    )
    sync_p.add_argument(
        "--no-verify", action="store_true", help="skip re-hashing the outputs against dvc.lock"
    )
    sub.add_parser("verify", help="re-hash every cached output against dvc.lock")
    pull_p = sub.add_parser("pull", help="dvc pull, then sync")
    pull_p.add_argument("dvc_args", nargs=argparse.REMAINDER)
    outs = sub.add_parser("outputs", help="every Snakemake output with its rule")
    outs.add_argument("--configfile")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            with workspace_lock():
                run_stage(args.stage, args.snakemake_args)
        elif args.command == "sync":
            with workspace_lock():
                sync(integrity=not args.no_verify)
        elif args.command == "verify":
            check_integrity()
        elif args.command == "pull":
            pull(args.dvc_args)
        else:
            for f, rule in sorted(workflow_outputs(configfile=args.configfile).items()):
                print(f"{f}\t{rule}")
    except DvcGlueError as err:
        sys.exit(f"{PREFIX} error: {err}")


if __name__ == "__main__":
    main()
