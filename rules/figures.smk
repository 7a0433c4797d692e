rule training_curves:
    input:
        runs=ts_paths.run_summaries(config),
    output:
        "results/figures/training_curves.png",
    log:
        "logs/figures/training_curves.log",
    resources:
        runtime=runtime_for("training_curves"),
        mem_mb=mem_mb_for("training_curves"),
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures curves --runs {input.runs} --dpi {params.dpi} "
        "--out {output} 2> {log}"
