# One rule per training regime; each writes runs/{experiment}/{regime}/seed{seed}/. Probe and
# finetune of every seed start from the one pre-training run of config pretrained_seed; with
# tuning enabled, finetune and scratch take lr and weight_decay from their search (rules/tune.smk).
# threads: 1 keeps CPU runs bit-reproducible whatever --cores is; parallelism is across jobs.


rule pretrain:
    input:
        data=dataset_of,
    output:
        "runs/{experiment}/pretrain/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/pretrain/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("pretrain"),
        mem_mb=mem_mb_for("pretrain"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=run_settings("pretrain"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--out {output} --threads {threads} 2> {log}"


rule probe:
    input:
        data=dataset_of,
        pretrained=pretrained_summary,
    output:
        "runs/{experiment}/probe/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/probe/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("probe"),
        mem_mb=mem_mb_for("probe"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=run_settings("probe"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --out {output} --threads {threads} 2> {log}"


rule finetune:
    input:
        data=dataset_of,
        pretrained=pretrained_summary,
        tuned=tuned_choice("finetune"),
    output:
        "runs/{experiment}/finetune/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/finetune/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("finetune"),
        mem_mb=mem_mb_for("finetune"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=run_settings("finetune"),
        tuned=tuned_option("finetune"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --out {output} {params.tuned} --threads {threads} 2> {log}"


rule scratch:
    input:
        data=dataset_of,
        tuned=tuned_choice("scratch"),
    output:
        "runs/{experiment}/scratch/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/scratch/seed{seed}.log",
    threads: 1
    resources:
        runtime=runtime_for("scratch"),
        mem_mb=mem_mb_for("scratch"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=run_settings("scratch"),
        tuned=tuned_option("scratch"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--out {output} {params.tuned} --threads {threads} 2> {log}"
