# Controls for "pre-training" (config controls:, docs/evidence.md): P with its knowledge removed.
# Each control P (permuted weights of P's final checkpoint, or P retrained on permuted source
# labels) gets a probe and a tuned fine-tune per seed like P, one extraction of their final
# epochs on the main samples, then the evidence tables and claim rows under
# results/evidence/controls/. Settings and paths: transferscope.controls.
from transferscope import controls as ts_controls

CONTROL_EXPERIMENTS = (
    "|".join(ts_controls.experiments(config))
    if ts_controls.enabled(config)
    else r"(?!x)x"
)


rule control_permute_weights:
    input:
        data=dataset_of,
        pretrained="runs/{experiment}/pretrain/seed{seed}/summary.json",
    output:
        "runs/{experiment}/pretrain-permuted-weights/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/pretrain-permuted-weights/seed{seed}.log",
    wildcard_constraints:
        experiment=CONTROL_EXPERIMENTS,
    threads: 1
    resources:
        runtime=runtime_for("control_permute_weights"),
        mem_mb=mem_mb_for("control_permute_weights"),
    params:
        settings=lambda wildcards: json.dumps(
            ts_controls.permute_weights_settings(
                config, wildcards.experiment, wildcards.seed
            ),
            sort_keys=True,
        ),
    shell:
        "transferscope controls permute-weights --settings {params.settings:q} "
        "--data {input.data} --init {input.pretrained} --out {output} "
        "--threads {threads} 2> {log}"


rule control_pretrain_permuted_labels:
    input:
        data=dataset_of,
    output:
        "runs/{experiment}/pretrain-permuted-labels/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/pretrain-permuted-labels/seed{seed}.log",
    wildcard_constraints:
        experiment=CONTROL_EXPERIMENTS,
    threads: 1
    resources:
        runtime=runtime_for("control_pretrain_permuted_labels"),
        mem_mb=mem_mb_for("control_pretrain_permuted_labels"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: json.dumps(
            ts_controls.permuted_labels_settings(
                config, wildcards.experiment, wildcards.seed
            ),
            sort_keys=True,
        ),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--out {output} --threads {threads} 2> {log}"


rule control_probe:
    input:
        data=dataset_of,
        pretrained=lambda wildcards: ts_controls.control_pretrained_summary(
            config, wildcards.experiment, wildcards.control, wildcards.seed
        ),
    output:
        "runs/{experiment}/probe-{control}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/probe-{control}/seed{seed}.log",
    wildcard_constraints:
        experiment=CONTROL_EXPERIMENTS,
        control="permuted-weights|permuted-labels",
    threads: 1
    resources:
        runtime=runtime_for("control_probe"),
        mem_mb=mem_mb_for("control_probe"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: json.dumps(
            ts_controls.control_run_settings(
                config,
                wildcards.experiment,
                "probe",
                wildcards.control,
                wildcards.seed,
            ),
            sort_keys=True,
        ),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --out {output} --threads {threads} 2> {log}"


rule control_finetune:
    input:
        data=dataset_of,
        pretrained=lambda wildcards: ts_controls.control_pretrained_summary(
            config, wildcards.experiment, wildcards.control, wildcards.seed
        ),
        tuned=tuned_choice("finetune"),
    output:
        "runs/{experiment}/finetune-{control}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/finetune-{control}/seed{seed}.log",
    wildcard_constraints:
        experiment=CONTROL_EXPERIMENTS,
        control="permuted-weights|permuted-labels",
    threads: 1
    resources:
        runtime=runtime_for("control_finetune"),
        mem_mb=mem_mb_for("control_finetune"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: json.dumps(
            ts_controls.control_run_settings(
                config,
                wildcards.experiment,
                "finetune",
                wildcards.control,
                wildcards.seed,
            ),
            sort_keys=True,
        ),
        tuned=tuned_option("finetune"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --out {output} {params.tuned} --threads {threads} "
        "2> {log}"


rule control_interactions:
    input:
        data=dataset_of,
        runs=[
            "runs/{experiment}/probe-{control}/seed{seed}/summary.json",
            "runs/{experiment}/finetune-{control}/seed{seed}/summary.json",
        ],
    output:
        "interactions/{experiment}/control-{control}/seed{seed}/summary.json",
    log:
        "logs/interactions/{experiment}/control-{control}/seed{seed}.log",
    wildcard_constraints:
        experiment=CONTROL_EXPERIMENTS,
        control="permuted-weights|permuted-labels",
    threads: 1
    resources:
        runtime=runtime_for("control_interactions"),
        mem_mb=mem_mb_for("control_interactions"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: json.dumps(
            ts_controls.control_interaction_settings(
                config, wildcards.experiment, wildcards.control, wildcards.seed
            ),
            sort_keys=True,
        ),
    shell:
        "transferscope interactions --settings {params.settings:q} --data {input.data} "
        "--runs {input.runs} --out {output} --threads {threads} 2> {log}"


rule controls_evidence:
    input:
        interactions=ts_controls.interaction_summaries(config),
        main_runs=ts_controls.main_runs(config),
        control_runs=ts_controls.control_runs(config),
        overlap_samples="results/knowledge/overlap_samples.parquet",
        data=[
            ts_paths.data_dir(config["experiments"][e]["dataset"])
            for e in ts_controls.experiments(config)
        ],
    output:
        claim_rows=ts_controls.claim_rows_path(),
        tables=[
            f"{ts_controls.tables_dir()}/{table}.{ext}"
            for table in ts_controls.TABLES
            for ext in ("parquet", "csv")
            if f"{table}.{ext}" != "claim_rows.parquet"
        ],
    log:
        "logs/evidence/controls.log",
    threads: 1
    resources:
        runtime=runtime_for("controls_evidence"),
        mem_mb=mem_mb_for("controls_evidence"),
    params:
        interactions=ts_controls.interaction_pairs(config),
        control_runs=ts_controls.control_run_pairs(config),
        data=experiment_data_pairs(),
        sign=config["knowledge"]["sign_agreement"],
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope controls evidence --interactions {params.interactions} "
        "--runs {input.main_runs} --control-runs {params.control_runs} "
        "--overlap-samples {input.overlap_samples} --data {params.data} "
        "--sign-agreement {params.sign} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out {output.claim_rows} 2> {log}"
