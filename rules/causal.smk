# The causal test in training (docs/evidence.md): fine-tunes with an interaction penalty that
# protects or suppresses P's salient low-order interactions (or suppresses random sets of the
# same orders), at each strength and seed of config causal_training, then the dose-response
# table, figure and claim rows. Each run starts from the shared pre-trained run with the
# fine-tune's tuned settings, as the regular finetune run of its seed; P (for Omega_pre) is the
# probe run of the same seed.

CAUSAL_EXPERIMENTS = "|".join(ts_causal.experiments(config)) or r"(?!x)x"


rule finetune_causal:
    input:
        data=dataset_of,
        pretrained=pretrained_summary,
        reference=lambda wildcards: ts_causal.reference_summary(
            wildcards.experiment, wildcards.seed
        ),
        tuned=tuned_choice("finetune"),
    output:
        "runs/{experiment}/finetune-{arm}{strength}/seed{seed}/summary.json",
    log:
        "logs/train/{experiment}/finetune-{arm}{strength}/seed{seed}.log",
    wildcard_constraints:
        experiment=CAUSAL_EXPERIMENTS,
        arm="protect|suppress|random",
        strength=r"[0-9][0-9.e+-]*",
    threads: 1
    resources:
        runtime=runtime_for("finetune_causal"),
        mem_mb=mem_mb_for("finetune_causal"),
        gpu=lambda wildcards: gpus(),
    params:
        settings=lambda wildcards: ts_causal.settings_json(config, wildcards),
        tuned=tuned_option("finetune"),
    shell:
        "transferscope train --settings {params.settings:q} --data {input.data} "
        "--init {input.pretrained} --reference {input.reference} --out {output} "
        "{params.tuned} --threads {threads} 2> {log}"


rule causal_training:
    input:
        data=[
            ts_paths.data_dir(config["experiments"][e]["dataset"])
            for e in ts_causal.experiments(config)
        ],
        runs=ts_causal.all_run_summaries(config),
    output:
        figure=report(
            ts_causal.FIGURE,
            caption="../report/dose_response.rst",
            category="Evidence",
        ),
        table=f"{ts_causal.out_dir()}/dose_response.parquet",
        tables=ts_causal.outputs(),
    log:
        "logs/evidence/causal_training.log",
    threads: 1
    resources:
        runtime=runtime_for("causal_training"),
        mem_mb=mem_mb_for("causal_training"),
    params:
        settings=ts_causal.stage_settings_json(config),
    shell:
        "transferscope causal --settings {params.settings:q} --runs {input.runs} "
        "--out-dir $(dirname {output.table}) --figure {output.figure} --threads {threads} "
        "2> {log}"
