# Honest baselines: one lr × weight-decay search per (experiment, regime) on a validation split
# of the target training set, identical for finetune and scratch (docs/references.md §4).


rule tune:
    input:
        data=dataset_of,
        pretrained=tuning_init,
    output:
        choice="runs/{experiment}/tuning/{regime}.json",
        table=report(
            "results/tuning/{experiment}/{regime}.csv",
            caption="../report/tuning.rst",
            category="Baselines",
            subcategory="{experiment}",
        ),
    log:
        "logs/tune/{experiment}/{regime}.log",
    wildcard_constraints:
        regime="finetune|scratch",
    threads: 1
    resources:
        runtime=runtime_for("tune"),
        mem_mb=mem_mb_for("tune"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=tuning_settings,
        init=lambda wildcards, input: (
            f"--init {input.pretrained}" if wildcards.regime == "finetune" else ""
        ),
    shell:
        "transferscope tune --settings {params.settings:q} --data {input.data} {params.init} "
        "--out {output.choice} --table {output.table} --threads {threads} 2> {log}"
