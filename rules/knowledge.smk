# One rule per aggregate: tables under results/knowledge/, headline numbers, summary, figures.


rule knowledge_transfer:
    input:
        interactions=ts_paths.interaction_summaries(config),
        data=[
            ts_paths.data_dir(spec["dataset"])
            for spec in config["experiments"].values()
        ],
    output:
        report(
            "results/knowledge/transfer.parquet",
            caption="../report/transfer.rst",
            category="Knowledge",
        ),
        "results/knowledge/transfer.csv",
        "results/knowledge/transfer_samples.parquet",
        "results/knowledge/transfer_samples.csv",
        "results/knowledge/planted.parquet",
        "results/knowledge/planted.csv",
        "results/knowledge/faithfulness.parquet",
        "results/knowledge/faithfulness.csv",
    log:
        "logs/knowledge/transfer.log",
    resources:
        runtime=runtime_for("knowledge_transfer"),
        mem_mb=mem_mb_for("knowledge_transfer"),
    params:
        sign=config["knowledge"]["sign_agreement"],
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
        data=experiment_data_pairs(),
    shell:
        "transferscope knowledge transfer --interactions {input.interactions} "
        "--data {params.data} --sign-agreement {params.sign} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out-dir results/knowledge 2> {log}"


rule knowledge_convergence:
    input:
        interactions=ts_paths.interaction_summaries(config),
    output:
        "results/knowledge/convergence.parquet",
        "results/knowledge/convergence.csv",
        "results/knowledge/convergence_samples.parquet",
        "results/knowledge/convergence_samples.csv",
        "results/knowledge/directness.parquet",
        "results/knowledge/directness.csv",
    log:
        "logs/knowledge/convergence.log",
    resources:
        runtime=runtime_for("knowledge_convergence"),
        mem_mb=mem_mb_for("knowledge_convergence"),
    params:
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope knowledge convergence --interactions {input.interactions} "
        "--bootstrap {params.bootstrap} --confidence {params.confidence} "
        "--out-dir results/knowledge 2> {log}"


rule knowledge_overlap:
    input:
        interactions=ts_paths.interaction_summaries(config),
    output:
        report(
            "results/knowledge/overlap.parquet",
            caption="../report/overlap.rst",
            category="Knowledge",
        ),
        "results/knowledge/overlap.csv",
        "results/knowledge/overlap_samples.parquet",
        "results/knowledge/overlap_samples.csv",
    log:
        "logs/knowledge/overlap.log",
    resources:
        runtime=runtime_for("knowledge_overlap"),
        mem_mb=mem_mb_for("knowledge_overlap"),
    params:
        sign=config["knowledge"]["sign_agreement"],
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope knowledge overlap --interactions {input.interactions} "
        "--sign-agreement {params.sign} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out-dir results/knowledge 2> {log}"


rule knowledge_claims:
    input:
        "results/knowledge/overlap.parquet",
        "results/knowledge/overlap_samples.parquet",
        "results/knowledge/convergence_samples.parquet",
        "results/knowledge/planted.parquet",
        "results/knowledge/knockout_samples.parquet",
        "results/theory/theory.json",
        analyses=ts_analyses.analyses_targets(config),
        evidence=ts_paths.evidence_claim_rows(config),
        runs=ts_paths.run_summaries(config),
        data=[
            ts_paths.data_dir(spec["dataset"])
            for spec in config["experiments"].values()
        ],
    output:
        claims=report(
            "results/claims.parquet",
            caption="../report/claims.rst",
            category="Summary",
        ),
        csv="results/claims.csv",
        learning="results/learning.parquet",
        learning_csv="results/learning.csv",
    log:
        "logs/knowledge/claims.log",
    resources:
        runtime=runtime_for("knowledge_claims"),
        mem_mb=mem_mb_for("knowledge_claims"),
    params:
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
        data=experiment_data_pairs(),
    shell:
        "transferscope knowledge claims --runs {input.runs} --data {params.data} "
        "--bootstrap {params.bootstrap} --confidence {params.confidence} "
        "--analyses-dir results/analyses --theory-dir results/theory "
        "--evidence-rows {input.evidence} "
        "--out-dir results/knowledge --claims {output.claims} 2> {log}"


rule knowledge_links:
    input:
        "results/knowledge/transfer_samples.parquet",
        "results/knowledge/convergence_samples.parquet",
        runs=ts_paths.run_summaries(config),
    output:
        "results/knowledge/links.parquet",
        "results/knowledge/links.csv",
    log:
        "logs/knowledge/links.log",
    resources:
        runtime=runtime_for("knowledge_links"),
        mem_mb=mem_mb_for("knowledge_links"),
    params:
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope knowledge links --runs {input.runs} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out-dir results/knowledge 2> {log}"


rule knowledge_report:
    input:
        "results/knowledge/transfer.parquet",
        "results/knowledge/convergence.parquet",
        "results/knowledge/directness.parquet",
        "results/knowledge/links.parquet",
        "results/knowledge/planted.parquet",
        "results/knowledge/overlap.parquet",
        "results/knowledge/faithfulness.parquet",
        "results/claims.parquet",
        "results/learning.parquet",
        runs=ts_paths.run_summaries(config),
    output:
        metrics="results/metrics.json",
        summary=report(
            "results/summary.md", caption="../report/summary.rst", category="Summary"
        ),
        landing="results/claims_tested.csv",
    log:
        "logs/knowledge/report.log",
    resources:
        runtime=runtime_for("knowledge_report"),
        mem_mb=mem_mb_for("knowledge_report"),
    params:
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope knowledge report --runs {input.runs} --out-dir results/knowledge "
        "--confidence {params.confidence} --claims results/claims.parquet "
        "--metrics {output.metrics} --summary {output.summary} --landing {output.landing} "
        "2> {log}"


rule figure_transfer:
    input:
        "results/knowledge/transfer_samples.parquet",
    output:
        report(
            "results/figures/transfer_by_order.png",
            caption="../report/transfer_by_order.rst",
            category="Figures",
        ),
    log:
        "logs/figures/transfer_by_order.log",
    resources:
        runtime=runtime_for("figure_transfer"),
        mem_mb=mem_mb_for("figure_transfer"),
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures transfer --table {input} --dpi {params.dpi} --out {output} 2> {log}"


rule figure_convergence:
    input:
        table="results/knowledge/convergence.parquet",
        runs=ts_paths.run_summaries(config),
    output:
        report(
            "results/figures/convergence.png",
            caption="../report/convergence.rst",
            category="Figures",
        ),
    log:
        "logs/figures/convergence.log",
    resources:
        runtime=runtime_for("figure_convergence"),
        mem_mb=mem_mb_for("figure_convergence"),
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures convergence --table {input.table} --runs {input.runs} "
        "--dpi {params.dpi} --out {output} 2> {log}"


rule figure_examples:
    input:
        interactions=ts_paths.interaction_summaries(config),
        data=[ts_paths.data_dir(d) for d in config["datasets"]],
    output:
        report(
            "results/figures/salient_examples.png",
            caption="../report/salient_examples.rst",
            category="Figures",
        ),
    log:
        "logs/figures/salient_examples.log",
    resources:
        runtime=runtime_for("figure_examples"),
        mem_mb=mem_mb_for("figure_examples"),
    params:
        data=experiment_data_pairs(),
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures examples --interactions {input.interactions} "
        "--data {params.data} --dpi {params.dpi} --out {output} 2> {log}"
