"""`transferscope <stage>`: the one entry point every Snakemake rule, DVC stage and user calls.

Imports are lazy (inside each command) so that a job pays only for the libraries its stage uses.
A stage takes its settings either as JSON from a rule (``--settings``) or from a config file and
selectors (``--configfile config.yaml --experiment E --regime R --seed S``); both go through
``transferscope.config.run_settings``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _json_arg(text: str):
    """JSON from the command line, or from a file with '@path'."""
    try:
        return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, json.JSONDecodeError) as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:80]}") from None


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return text.lower() in ("true", "1")


def _settings(args) -> dict:
    if args.settings is not None:
        return args.settings
    from transferscope.config import load_config, run_settings

    if not (args.configfile and args.experiment and args.regime and args.seed is not None):
        sys.exit("give --settings JSON, or --configfile with --experiment, --regime and --seed")
    return run_settings(load_config(args.configfile), args.experiment, args.regime, args.seed)


def cmd_data_prepare(args) -> None:
    from transferscope.data.registry import prepare_dataset

    params = args.params
    if args.configfile:
        from transferscope.config import load_config

        params = load_config(args.configfile)["datasets"][args.name]
    prepare_dataset(args.name, params or {}, Path(args.out))


def cmd_data_fetch(args) -> None:
    from transferscope.data.download import fetch_dataset

    params = args.params
    if args.configfile:
        from transferscope.config import load_config

        datasets = load_config(args.configfile)["datasets"]
        if args.name not in datasets:
            raise ValueError(
                f"{args.configfile}: no datasets.{args.name}; allowed: {sorted(datasets)}"
            )
        params = datasets[args.name]
    for path in fetch_dataset(args.name, params or {}):
        print(path)


def cmd_train(args) -> None:
    from transferscope.training import train_run
    from transferscope.workflow import final_checkpoint

    init = final_checkpoint(args.init) if args.init and args.init.endswith(".json") else args.init
    settings = _settings(args)
    if args.tuned:
        from transferscope.io import read_json
        from transferscope.tuning import tuned_settings

        settings = tuned_settings(settings, read_json(args.tuned))
    reference = args.reference
    if reference and reference.endswith(".json"):
        reference = final_checkpoint(reference)
    train_run(
        settings, args.data, _run_dir(args.out), init, args.threads, _progress(args), reference
    )


def cmd_causal(args) -> None:
    from transferscope.causal.dose import dose_response

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dose_response(args.settings, args.runs, args.out_dir, args.figure)


def cmd_tune(args) -> None:
    from transferscope.tuning import search, search_settings
    from transferscope.workflow import final_checkpoint

    if args.settings is not None:
        settings = args.settings
    elif args.configfile and args.experiment and args.regime:
        from transferscope.config import load_config

        settings = search_settings(load_config(args.configfile), args.experiment, args.regime)
    else:
        sys.exit("give --settings JSON, or --configfile with --experiment and --regime")
    init = final_checkpoint(args.init) if args.init and args.init.endswith(".json") else args.init
    choice = search(settings, args.data, args.out, args.table, init, args.threads, _progress(args))
    print(f"{args.out}: lr {choice['lr']:g}, weight_decay {choice['weight_decay']:g}")


def _progress(args) -> bool:
    """Progress bars unless the stage's --quiet or the global -q asks for silence."""
    return not args.quiet and not getattr(args, "log_quiet", 0)


def _run_dir(path: str) -> Path:
    """A run directory given itself or its summary.json (what workflow rules track)."""
    path = Path(path)
    return path.parent if path.name == "summary.json" else path


def cmd_interactions(args) -> None:
    from transferscope.interactions.extract import extract
    from transferscope.io import read_json

    settings = args.settings
    if settings is None:
        from transferscope.config import interaction_settings, load_config

        settings = interaction_settings(load_config(args.configfile), args.experiment, args.seed)
    runs = {read_json(Path(s))["regime"]: _run_dir(s) for s in args.runs}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    extract(
        settings,
        args.data,
        runs,
        _run_dir(args.out),
        progress=_progress(args),
        values_from=args.values_from and _run_dir(args.values_from),
    )


def cmd_knowledge(args) -> None:
    from transferscope.knowledge import aggregate, report

    boot = {"resamples": args.bootstrap, "confidence": args.confidence}
    if args.action == "transfer":
        data = dict(pair.split("=", 1) for pair in args.data)
        aggregate.transfer_tables(
            args.interactions, args.out_dir, args.sign_agreement, **boot, data_dirs=data
        )
    elif args.action == "convergence":
        aggregate.convergence_tables(args.interactions, args.out_dir, **boot)
    elif args.action == "overlap":
        from transferscope.knowledge.overlaps import overlap_tables

        overlap_tables(args.interactions, args.out_dir, args.sign_agreement, **boot)
    elif args.action == "tables":  # every per-interaction table, for a sensitivity variant
        from transferscope.knowledge.overlaps import overlap_tables

        data = dict(pair.split("=", 1) for pair in args.data)
        aggregate.transfer_tables(
            args.interactions, args.out_dir, args.sign_agreement, **boot, data_dirs=data
        )
        aggregate.convergence_tables(args.interactions, args.out_dir, **boot)
        overlap_tables(args.interactions, args.out_dir, args.sign_agreement, **boot)
    elif args.action == "sensitivity":
        from transferscope.knowledge.claims import verdict_changes

        verdict_changes(dict(pair.split("=", 1) for pair in args.variants), args.out)
    elif args.action == "claims":
        from transferscope.knowledge.claims import claims_table

        data = dict(pair.split("=", 1) for pair in args.data)
        claims_table(
            args.out_dir,
            args.runs,
            data,
            args.claims,
            **boot,
            analyses_dir=args.analyses_dir,
            theory_dir=args.theory_dir,
            evidence_rows=args.evidence_rows,
        )
    elif args.action == "graded":
        from transferscope.knowledge.graded import graded_stage

        if args.settings is None or not (args.evidence_dir and args.figure):
            sys.exit("graded: give --settings JSON, --evidence-dir and --figure")
        data = dict(pair.split("=", 1) for pair in args.data)
        graded_stage(
            args.settings, args.runs, data, args.out_dir, args.evidence_dir, args.figure, args.dpi
        )
    elif args.action == "knockout":
        from transferscope.knowledge.knockout import knockout_tables

        knockout_tables(args.interactions, args.out_dir, args.sign_agreement, **boot)
    elif args.action == "links":
        knowledge = Path(args.out_dir)
        aggregate.link_tables(
            knowledge / "transfer_samples.parquet",
            knowledge / "convergence_samples.parquet",
            args.runs,
            knowledge,
            **boot,
        )
    else:
        report.write_reports(
            args.out_dir,
            args.runs,
            args.metrics,
            args.summary,
            args.confidence,
            args.claims,
            landing_out=args.landing,
        )


def cmd_controls(args) -> None:
    if args.action == "permute-weights":
        from transferscope.controls.weights import permute_weights_run

        if len(args.data) != 1 or not args.init or not args.out or args.settings is None:
            sys.exit("permute-weights needs --settings, one --data directory, --init and --out")
        permute_weights_run(
            args.settings, args.data[0], args.init, _run_dir(args.out), args.threads
        )
        return
    from transferscope.controls.evidence import evidence

    def by_control(pairs):
        out: dict[str, list[str]] = {}
        for pair in pairs:
            control, _, path = pair.partition("=")
            out.setdefault(control, []).append(path)
        return out

    evidence(
        by_control(args.interactions),
        args.runs,
        by_control(args.control_runs),
        args.overlap_samples,
        dict(pair.split("=", 1) for pair in args.data),
        Path(args.out).parent,
        args.sign_agreement,
        args.bootstrap,
        args.confidence,
    )


def cmd_figures_knowledge(args) -> None:
    from transferscope.knowledge import figures

    if args.action == "transfer":
        figures.transfer_by_order(args.table, args.out, args.dpi)
    elif args.action == "convergence":
        figures.convergence(args.table, args.runs, args.out, args.dpi)
    elif args.action == "knockout":
        figures.knockout(args.table, args.out, args.dpi)
    else:
        data = dict(pair.split("=", 1) for pair in args.data)
        figures.salient_examples(args.interactions, data, args.out, dpi=args.dpi)


def cmd_figures_curves(args) -> None:
    from transferscope.figures import training_curves

    training_curves([_run_dir(r) for r in args.runs], Path(args.out), dpi=args.dpi)


def cmd_theory(args) -> None:
    from transferscope.theory.report import run_theory

    params = args.params
    if args.configfile:
        import yaml

        from transferscope.config import load_config

        raw = yaml.safe_load(Path(args.configfile).read_text()) or {}
        if set(raw) - {"theory"}:  # a whole workflow config: validated as the workflow does
            raw = load_config(args.configfile)
        params = raw.get("theory", {})  # a theory-only file (config/theory-full.yaml)
    run_theory(params or {}, Path(args.out))


def cmd_analyses(args) -> None:
    from transferscope.analyses import stage

    if args.action == "models":
        stage.run_analyses(args.settings, args.data, args.runs, args.out, threads=args.threads)
    elif args.action == "reuse":
        stage.feature_reuse(args.settings, args.data, args.runs, args.out)
    elif args.action == "checkpoints":
        stage.intermediate_checkpoints(args.settings, args.runs, args.out)
    else:
        stage.compare(
            args.summaries,
            args.transfer,
            args.transfer_samples,
            args.out,
            skipped=args.skipped,
            dpi=args.dpi,
        )


def cmd_plan(args) -> None:
    from transferscope.plan import run

    run(args)


def build_parser() -> argparse.ArgumentParser:
    from transferscope.config import schema_default

    parser = argparse.ArgumentParser(prog="transferscope", description=__doc__.splitlines()[0])
    # own dests: a stage's --quiet (no progress bar) must not overwrite these
    parser.add_argument(
        "-v", "--verbose", dest="log_verbose", action="count", default=0, help="more log lines"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        dest="log_quiet",
        action="count",
        default=0,
        help="warnings and errors only (-qq: errors only); no progress bars",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    data = stages.add_parser("data", help="prepare or fetch datasets").add_subparsers(
        dest="action", required=True
    )
    prepare = data.add_parser("prepare", help="generate or convert a dataset into data/<name>")
    prepare.add_argument("name")
    prepare.add_argument("--params", type=_json_arg, help="generator parameters (JSON)")
    prepare.add_argument("--configfile", help="take the parameters from datasets.<name> here")
    prepare.add_argument("--out", required=True)
    prepare.set_defaults(func=cmd_data_prepare)
    fetch = data.add_parser("fetch", help="download a published dataset's files (verified)")
    fetch.add_argument("name")
    fetch.add_argument(
        "--params", type=_json_arg, help="dataset parameters (JSON): urls, cache_dir"
    )
    fetch.add_argument("--configfile", help="take the parameters from datasets.<name> here")
    fetch.set_defaults(func=cmd_data_fetch)

    train = stages.add_parser("train", help="train one (experiment, regime, seed) run")
    _add_selectors(train)
    train.add_argument("--data", required=True, help="prepared dataset directory")
    train.add_argument("--out", required=True, help="run directory (checkpoints, metrics)")
    train.add_argument(
        "--init", help="pre-trained checkpoint, or its run's summary.json (probe and finetune)"
    )
    train.add_argument("--threads", type=int)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--tuned", help="a `tune` choice (JSON) whose lr and weight_decay to use")
    train.add_argument(
        "--reference",
        help="causal runs: P's probe run (summary.json or checkpoint) that gives Ω_pre",
    )
    train.set_defaults(func=cmd_train)

    causal = stages.add_parser(
        "causal", help="the causal test in training: dose-response table, figure, claim rows"
    )
    causal.add_argument("--settings", type=_json_arg, required=True, help="stage settings (JSON)")
    causal.add_argument("--runs", nargs="*", default=[], help="run summary.json files")
    causal.add_argument("--out-dir", required=True, help="results/evidence/causal_training")
    causal.add_argument("--figure", required=True, help="the dose-response figure (PNG)")
    causal.add_argument("--threads", type=int)
    causal.set_defaults(func=cmd_causal)

    tune = stages.add_parser(
        "tune", help="lr × weight-decay search of one (experiment, regime) on a validation split"
    )
    _add_selectors(tune)
    tune.add_argument("--data", required=True, help="prepared dataset directory")
    tune.add_argument("--out", required=True, help="the choice and its table (JSON)")
    tune.add_argument("--table", required=True, help="the search's table (CSV)")
    tune.add_argument("--init", help="pre-trained checkpoint or its summary.json (finetune)")
    tune.add_argument("--threads", type=int)
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(func=cmd_tune)

    inter = stages.add_parser(
        "interactions", help="AND-OR interactions of every checkpoint of an (experiment, seed)"
    )
    _add_selectors(inter)
    inter.add_argument("--data", required=True, help="prepared dataset directory")
    inter.add_argument("--runs", nargs="+", required=True, help="run summary.json files")
    inter.add_argument("--out", required=True, help="output directory or its summary.json")
    inter.add_argument("--threads", type=int, help="CPU threads for the masked forward passes")
    inter.add_argument(
        "--values-from",
        help="another extraction (directory or summary.json) of the same checkpoints whose "
        "settings differ only in tau / q_thres: decompose its cached v again, no forward passes",
    )
    inter.add_argument("--quiet", action="store_true")
    inter.set_defaults(func=cmd_interactions)

    knowledge = stages.add_parser("knowledge", help="knowledge tables, metrics and summary")
    knowledge.add_argument(
        "action",
        choices=[
            "transfer",
            "convergence",
            "overlap",
            "links",
            "claims",
            "report",
            "tables",
            "sensitivity",
            "knockout",
            "graded",
        ],
    )
    knowledge.add_argument("--interactions", nargs="*", default=[], help="extraction summaries")
    knowledge.add_argument("--runs", nargs="*", default=[], help="run summary.json files")
    knowledge.add_argument(
        "--data", nargs="*", default=[], help="transfer: experiment=data_dir pairs (planted rules)"
    )
    knowledge.add_argument("--out-dir", required=True, help="results/knowledge")
    knowledge.add_argument(
        "--sign-agreement", type=_bool, default=schema_default("knowledge", "sign_agreement")
    )
    knowledge.add_argument(
        "--bootstrap", type=int, default=schema_default("knowledge", "bootstrap")
    )
    knowledge.add_argument(
        "--confidence", type=float, default=schema_default("knowledge", "confidence")
    )
    knowledge.add_argument("--metrics", help="report: headline numbers JSON")
    knowledge.add_argument("--summary", help="report: plain-sentence Markdown summary")
    knowledge.add_argument("--landing", help="report: tested claims as CSV (report landing page)")
    knowledge.add_argument("--claims", help="claims: the claims table (.parquet, CSV beside it)")
    knowledge.add_argument(
        "--variants", nargs="+", help="sensitivity: name=claims.parquet pairs, the base first"
    )
    knowledge.add_argument("--out", help="sensitivity: the verdict comparison (.parquet)")
    knowledge.add_argument("--analyses-dir", help="claims: results/analyses (representation lens)")
    knowledge.add_argument("--theory-dir", help="claims: results/theory (theory lens)")
    knowledge.add_argument(
        "--evidence-rows",
        nargs="*",
        default=[],
        help="claims: pre-verdict claim rows of the evidence stages (claim_rows.parquet files)",
    )
    knowledge.add_argument(
        "--settings", type=_json_arg, help="graded: stage settings (JSON, or @file)"
    )
    knowledge.add_argument("--evidence-dir", help="graded: results/evidence/graded")
    knowledge.add_argument("--figure", help="graded: the figure (PNG)")
    knowledge.add_argument("--dpi", type=int, default=schema_default("figures", "dpi"))
    knowledge.set_defaults(func=cmd_knowledge)

    controls = stages.add_parser(
        "controls", help="controls for pre-training: permuted-weights P, their evidence tables"
    )
    controls.add_argument("action", choices=["permute-weights", "evidence"])
    controls.add_argument("--settings", type=_json_arg, help="permute-weights: settings (JSON)")
    controls.add_argument("--data", nargs="*", default=[],
                          help="permute-weights: the dataset; evidence: experiment=data_dir pairs")  # fmt: skip
    controls.add_argument("--init", help="permute-weights: P's pre-training summary.json")
    controls.add_argument("--threads", type=int)
    controls.add_argument("--interactions", nargs="*", default=[],
                          help="evidence: control=extraction summary.json pairs")  # fmt: skip
    controls.add_argument("--runs", nargs="*", default=[], help="evidence: the real P's runs")
    controls.add_argument("--control-runs", nargs="*", default=[],
                          help="evidence: control=run summary.json pairs")  # fmt: skip
    controls.add_argument("--overlap-samples", help="evidence: the main overlap_samples table")
    controls.add_argument(
        "--sign-agreement", type=_bool, default=schema_default("knowledge", "sign_agreement")
    )
    controls.add_argument("--bootstrap", type=int, default=schema_default("knowledge", "bootstrap"))
    controls.add_argument(
        "--confidence", type=float, default=schema_default("knowledge", "confidence")
    )
    controls.add_argument(
        "--out",
        required=True,
        help="permute-weights: the run directory or its summary.json; evidence: the claim rows "
        "(results/evidence/controls/claim_rows.parquet; the other tables beside it)",
    )
    controls.set_defaults(func=cmd_controls)

    dpi = schema_default("figures", "dpi")
    figures = stages.add_parser("figures", help="draw figures").add_subparsers(
        dest="action", required=True
    )
    curves = figures.add_parser("curves", help="per-epoch loss and accuracy of runs")
    curves.add_argument("--runs", nargs="+", required=True)
    curves.add_argument("--out", required=True)
    curves.add_argument("--dpi", type=int, default=dpi)
    curves.set_defaults(func=cmd_figures_curves)
    for name, helptext in [
        ("transfer", "preserved / discarded / new by order"),
        ("convergence", "similarity to the final interactions beside accuracy"),
        ("examples", "strongest salient interactions drawn on inputs"),
        ("knockout", "drop in v as the players of salient terms are knocked out"),
    ]:
        fig = figures.add_parser(name, help=helptext)
        fig.add_argument(
            "--table", help="knowledge table (transfer_samples / convergence / knockout)"
        )
        fig.add_argument("--runs", nargs="*", default=[])
        fig.add_argument("--interactions", nargs="*", default=[])
        fig.add_argument("--data", nargs="*", default=[], help="experiment=data_dir pairs")
        fig.add_argument("--out", required=True)
        fig.add_argument("--dpi", type=int, default=dpi)
        fig.set_defaults(func=cmd_figures_knowledge)

    theory = stages.add_parser("theory", help="theory lens: closed forms, simulations, diagrams")
    theory.add_argument("--params", type=_json_arg)
    theory.add_argument("--configfile")
    theory.add_argument("--out", required=True)
    theory.set_defaults(func=cmd_theory)

    analyses = stages.add_parser(
        "analyses", help="representation and landscape analyses of the image experiments"
    )
    analyses.add_argument(
        "action",
        nargs="?",
        default="models",
        choices=["models", "reuse", "checkpoints", "compare"],
        help="models: CKA, barriers, criticality, spectra, mistakes (default); reuse: block "
        "shuffling; checkpoints: intermediate pre-training epochs; compare: all experiments",
    )
    analyses.add_argument("--settings", type=_json_arg, help="resolved analyses settings (JSON)")
    analyses.add_argument("--data", help="prepared dataset directory")
    analyses.add_argument("--runs", nargs="*", default=[], help="run summary.json files")
    analyses.add_argument("--threads", type=int)
    analyses.add_argument("--summaries", nargs="*", default=[], help="compare: per-experiment")
    analyses.add_argument("--transfer", help="compare: results/knowledge/transfer.parquet")
    analyses.add_argument("--transfer-samples", help="compare: transfer_samples.parquet")
    analyses.add_argument("--skipped", type=_json_arg, default={}, help="compare: JSON")
    analyses.add_argument("--dpi", type=int, default=dpi)
    analyses.add_argument("--out", required=True)
    analyses.set_defaults(func=cmd_analyses)

    from transferscope.plan import add_arguments as plan_arguments

    plan = stages.add_parser(
        "plan", help="jobs, compute, memory and time per rule for a config (SLURM requests)"
    )
    plan_arguments(plan)
    plan.set_defaults(func=cmd_plan)
    return parser


def _add_selectors(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=_json_arg, help="resolved run settings (JSON)")
    parser.add_argument("--configfile")
    parser.add_argument("--experiment")
    parser.add_argument("--regime")
    parser.add_argument("--seed", type=int)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from transferscope import log

    log.setup(args.log_verbose, args.log_quiet)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # a user-facing failure: one clear line, not a traceback (set TRANSFERSCOPE_DEBUG=1 for it)
        import os

        if os.environ.get("TRANSFERSCOPE_DEBUG"):
            raise
        sys.exit(f"transferscope {args.stage}: error: {err}")


if __name__ == "__main__":
    main()
