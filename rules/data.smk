rule prepare_data:
    output:
        directory("data/{dataset}"),
    log:
        "logs/data/{dataset}.log",
    resources:
        runtime=runtime_for("prepare_data"),
        mem_mb=mem_mb_for("prepare_data"),
    params:
        generator=dataset_params,
    shell:
        "transferscope data prepare {wildcards.dataset} --params {params.generator:q} "
        "--out {output} 2> {log}"
