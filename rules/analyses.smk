# Representation and landscape analyses (docs/references.md §2) and the theory bridge (§3), on the
# image experiments; text experiments are skipped and results/analyses/summary.json says so.
# Extra training runs (block-shuffled, from intermediate pre-training epochs) reuse
# `transferscope train` with settings from transferscope.analyses.settings, for analyses.seeds only;
# the fine-tuned ones start from the shared pre-trained run (config pretrained_seed), and every
# one uses its regime's tuned settings, as the runs it is compared with do.

IMAGE_EXPERIMENTS = ts_analyses.experiment_pattern(config)


rule finetune_shuffled:
    input:
        data=dataset_of,
        pretrained=pretrained_summary,
        tuned=tuned_choice("finetune"),
    output:
        "runs/{experiment}/finetune-shuffle{block}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/finetune-shuffle{block}/seed{seed}.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
        block=r"\d+",
    threads: 1
    resources:
        runtime=runtime_for("finetune_shuffled"),
        mem_mb=mem_mb_for("finetune_shuffled"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: ts_analyses.shuffle_settings_json(
            config, wildcards, "finetune"
        ),
        tuned=tuned_option("finetune"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --out {output} {params.tuned} --threads {threads} "
        "2> {log}"


rule scratch_shuffled:
    input:
        data=dataset_of,
        tuned=tuned_choice("scratch"),
    output:
        "runs/{experiment}/scratch-shuffle{block}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/scratch-shuffle{block}/seed{seed}.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
        block=r"\d+",
    threads: 1
    resources:
        runtime=runtime_for("scratch_shuffled"),
        mem_mb=mem_mb_for("scratch_shuffled"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: ts_analyses.shuffle_settings_json(
            config, wildcards, "scratch"
        ),
        tuned=tuned_option("scratch"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--out {output} {params.tuned} --threads {threads} 2> {log}"


rule finetune_from_epoch:
    input:
        data=dataset_of,
        pretrained=pretrained_summary,
        tuned=tuned_choice("finetune"),
    output:
        "runs/{experiment}/finetune-from{epoch}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/finetune-from{epoch}/seed{seed}.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
        epoch=r"\d+",
    threads: 1
    resources:
        runtime=runtime_for("finetune_from_epoch"),
        mem_mb=mem_mb_for("finetune_from_epoch"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: ts_analyses.from_settings_json(config, wildcards),
        init=lambda wildcards: ts_analyses.from_init(config, wildcards),
        tuned=tuned_option("finetune"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {params.init} --out {output} {params.tuned} --threads {threads} 2> {log}"


rule analyses:
    input:
        data=dataset_of,
        runs=lambda wildcards: ts_analyses.experiment_run_summaries(
            config, wildcards.experiment
        ),
    output:
        summary="results/analyses/{experiment}/summary.json",
        tables=expand(
            "results/analyses/{{experiment}}/{table}.{ext}",
            table=ts_analyses.MODEL_TABLES,
            ext=["parquet", "csv"],
        ),
        gallery=report(
            "results/analyses/{experiment}/mistakes_gallery.png",
            caption="../report/analyses_mistakes.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
        similarity=report(
            "results/analyses/{experiment}/similarity.png",
            caption="../report/analyses_similarity.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
        barrier=report(
            "results/analyses/{experiment}/barrier_curves.png",
            caption="../report/analyses_barrier.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
        criticality=report(
            "results/analyses/{experiment}/criticality_heatmaps.png",
            caption="../report/analyses_criticality.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
        criticality_bars=report(
            "results/analyses/{experiment}/criticality_bars.png",
            caption="../report/analyses_criticality_bars.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
        spectra=report(
            "results/analyses/{experiment}/spectra.png",
            caption="../report/analyses_spectra.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
    log:
        "logs/analyses/{experiment}.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
    threads: 1
    resources:
        runtime=runtime_for("analyses"),
        mem_mb=mem_mb_for("analyses"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: ts_analyses.rule_settings(
            config, wildcards, "models"
        ),
    shell:
        "transferscope analyses --settings {params.settings:q} --data {input.data} "
        "--runs {input.runs} --threads {threads} --out {output.summary} 2> {log}"


rule feature_reuse:
    input:
        data=dataset_of,
        runs=lambda wildcards: ts_analyses.reuse_run_summaries(
            config, wildcards.experiment
        ),
    output:
        table="results/analyses/{experiment}/feature_reuse.parquet",
        csv="results/analyses/{experiment}/feature_reuse.csv",
        figure=report(
            "results/analyses/{experiment}/feature_reuse.png",
            caption="../report/analyses_feature_reuse.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
    log:
        "logs/analyses/{experiment}_feature_reuse.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
    resources:
        runtime=runtime_for("feature_reuse"),
        mem_mb=mem_mb_for("feature_reuse"),
    params:
        settings=lambda wildcards: ts_analyses.rule_settings(config, wildcards, "reuse"),
    shell:
        "transferscope analyses reuse --settings {params.settings:q} --data {input.data} "
        "--runs {input.runs} --out {output.table} 2> {log}"


rule intermediate_checkpoints:
    input:
        runs=lambda wildcards: ts_analyses.checkpoint_run_summaries(
            config, wildcards.experiment
        ),
    output:
        table="results/analyses/{experiment}/intermediate.parquet",
        csv="results/analyses/{experiment}/intermediate.csv",
        figure=report(
            "results/analyses/{experiment}/intermediate.png",
            caption="../report/analyses_intermediate.rst",
            category="Analyses",
            subcategory="{experiment}",
        ),
    log:
        "logs/analyses/{experiment}_intermediate.log",
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
    resources:
        runtime=runtime_for("intermediate_checkpoints"),
        mem_mb=mem_mb_for("intermediate_checkpoints"),
    params:
        settings=lambda wildcards: ts_analyses.rule_settings(
            config, wildcards, "checkpoints"
        ),
    shell:
        "transferscope analyses checkpoints --settings {params.settings:q} "
        "--runs {input.runs} --out {output.table} 2> {log}"


rule analyses_compare:
    input:
        summaries=expand(
            "results/analyses/{experiment}/summary.json",
            experiment=ts_analyses.image_experiments(config),
        ),
        transfer="results/knowledge/transfer.parquet",
        samples="results/knowledge/transfer_samples.parquet",
    output:
        summary="results/analyses/summary.json",
        side_by_side="results/analyses/side_by_side.parquet",
        side_by_side_csv="results/analyses/side_by_side.csv",
        views="results/analyses/views.parquet",
        views_csv="results/analyses/views.csv",
        bridge="results/analyses/bridge.parquet",
        bridge_csv="results/analyses/bridge.csv",
        side_by_side_figure=report(
            "results/analyses/side_by_side.png",
            caption="../report/analyses_side_by_side.rst",
            category="Analyses",
        ),
        bridge_figure=report(
            "results/analyses/bridge.png",
            caption="../report/analyses_bridge.rst",
            category="Analyses",
        ),
    log:
        "logs/analyses/compare.log",
    resources:
        runtime=runtime_for("analyses_compare"),
        mem_mb=mem_mb_for("analyses_compare"),
    params:
        skipped=json.dumps(ts_analyses.skipped_experiments(config), sort_keys=True),
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope analyses compare --summaries {input.summaries} "
        "--transfer {input.transfer} --transfer-samples {input.samples} "
        "--skipped {params.skipped:q} --dpi {params.dpi} --out {output.summary} 2> {log}"
