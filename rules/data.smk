rule prepare_data:
    output:
        directory("data/{dataset}"),
    log:
        "logs/data/{dataset}.log",
    params:
        generator=dataset_params,
    shell:
        "transferscope data prepare {wildcards.dataset} --params {params.generator:q} "
        "--out {output} 2> {log}"
