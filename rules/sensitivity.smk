# Verdict sensitivity (config/sensitivity.yaml): every variant re-extracts the games of the same
# checkpoints under other interaction settings (a tau / q_thres variant only re-decomposes the
# default extraction's cached v), then its knowledge tables and claims; the last rule tabulates
# which verdicts change. Nothing here runs unless sensitivity.variants is set.


wildcard_constraints:
    variant=r"[A-Za-z0-9_.\-]+",


rule sensitivity_interactions:
    input:
        data=dataset_of,
        runs=regime_summaries(["probe", "finetune", "scratch"]),
        values=sensitivity_values_from,
    output:
        "sensitivity/{variant}/{experiment}/seed{seed}/summary.json",
    log:
        "logs/sensitivity/{variant}/{experiment}/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("interactions"),
        mem_mb=mem_mb_for("interactions"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=sensitivity_settings,
        values=sensitivity_values_option,
    shell:
        "transferscope interactions --settings {params.settings:q} --data {input.data} "
        "--runs {input.runs} {params.values} --out {output} --threads {threads} 2> {log}"


rule sensitivity_knowledge:
    input:
        interactions=sensitivity_summaries,
        data=[
            ts_paths.data_dir(spec["dataset"])
            for spec in config["experiments"].values()
        ],
    output:
        "results/sensitivity/{variant}/knowledge/overlap.parquet",
        "results/sensitivity/{variant}/knowledge/overlap_samples.parquet",
        "results/sensitivity/{variant}/knowledge/convergence_samples.parquet",
        "results/sensitivity/{variant}/knowledge/planted.parquet",
    log:
        "logs/sensitivity/{variant}/knowledge.log",
    resources:
        runtime=runtime_for("knowledge_overlap"),
        mem_mb=mem_mb_for("knowledge_overlap"),
    params:
        sign=config["knowledge"]["sign_agreement"],
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
        data=experiment_data_pairs(),
        out=lambda wildcards: f"{ts_paths.sensitivity_dir(wildcards.variant)}/knowledge",
    shell:
        "transferscope knowledge tables --interactions {input.interactions} "
        "--data {params.data} --sign-agreement {params.sign} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out-dir {params.out} 2> {log}"


rule sensitivity_claims:
    input:
        "results/sensitivity/{variant}/knowledge/overlap.parquet",
        runs=ts_paths.run_summaries(config),
    output:
        claims="results/sensitivity/{variant}/claims.parquet",
        csv="results/sensitivity/{variant}/claims.csv",
    log:
        "logs/sensitivity/{variant}/claims.log",
    resources:
        runtime=runtime_for("knowledge_claims"),
        mem_mb=mem_mb_for("knowledge_claims"),
    params:
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
        data=experiment_data_pairs(),
        out=lambda wildcards: ts_paths.sensitivity_dir(wildcards.variant),
    shell:
        "transferscope knowledge claims --runs {input.runs} --data {params.data} "
        "--bootstrap {params.bootstrap} --confidence {params.confidence} "
        "--out-dir {params.out}/knowledge --claims {output.claims} 2> {log}"


rule sensitivity_verdicts:
    input:
        base="results/claims.parquet",
        variants=expand(
            "results/sensitivity/{variant}/claims.parquet",
            variant=config.get("sensitivity", {}).get("variants", {}),
        ),
    output:
        table=ts_paths.SENSITIVITY_VERDICTS,
        csv=ts_paths.SENSITIVITY_VERDICTS.replace(".parquet", ".csv"),
    log:
        "logs/sensitivity/verdicts.log",
    resources:
        runtime=runtime_for("knowledge_claims"),
        mem_mb=mem_mb_for("knowledge_claims"),
    params:
        pairs=lambda wildcards, input: " ".join(
            f"{v}={p}"
            for v, p in zip(config["sensitivity"]["variants"], input.variants)
        ),
    shell:
        "transferscope knowledge sensitivity --variants base={input.base} {params.pairs} "
        "--out-dir results/sensitivity --out {output.table} 2> {log}"
