# One job per (experiment, seed): the probe's final epoch and every fine-tune and scratch epoch,
# on the same samples; one cache file per (run, epoch) inside the output directory.


rule interactions:
    input:
        data=dataset_of,
        runs=regime_summaries(["probe", "finetune", "scratch"]),
    output:
        "interactions/{experiment}/seed{seed}/summary.json",
    log:
        "logs/interactions/{experiment}/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("interactions"),
        mem_mb=mem_mb_for("interactions"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=interaction_settings,
    shell:
        "transferscope interactions --settings {params.settings:q} --data {input.data} "
        "--runs {input.runs} --out {output} --threads {threads} 2> {log}"
