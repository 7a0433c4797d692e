rule training_curves:
    input:
        runs=ts_paths.run_summaries(config),
    output:
        "results/figures/training_curves.png",
    log:
        "logs/figures/training_curves.log",
    params:
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope figures curves --runs {input.runs} --dpi {params.dpi} "
        "--out {output} 2> {log}"
