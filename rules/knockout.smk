# The causal test at inference: knockout curves read from the interaction caches, and their figure.


rule knowledge_knockout:
    input:
        interactions=ts_paths.interaction_summaries(config),
    output:
        report(
            "results/knowledge/knockout.parquet",
            caption="../report/knockout.rst",
            category="Knowledge",
        ),
        "results/knowledge/knockout.csv",
        "results/knowledge/knockout_samples.parquet",
        "results/knowledge/knockout_samples.csv",
    log:
        "logs/knowledge/knockout.log",
    resources:
        runtime=runtime_for("knowledge_knockout"),
        mem_mb=mem_mb_for("knowledge_knockout"),
    params:
        sign=config["knowledge"]["sign_agreement"],
        bootstrap=config["knowledge"]["bootstrap"],
        confidence=config["knowledge"]["confidence"],
    shell:
        "transferscope knowledge knockout --interactions {input.interactions} "
        "--sign-agreement {params.sign} --bootstrap {params.bootstrap} "
        "--confidence {params.confidence} --out-dir results/knowledge 2> {log}"


rule figure_knockout:
    input:
        "results/knowledge/knockout.parquet",
    output:
        report(
            "results/figures/knockout.png",
            caption="../report/knockout.rst",
            category="Figures",
        ),
    log:
        "logs/figures/knockout.log",
    resources:
        runtime=runtime_for("figure_knockout"),
        mem_mb=mem_mb_for("figure_knockout"),
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures knockout --table {input} --dpi {params.dpi} --out {output} 2> {log}"
