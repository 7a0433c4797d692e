# The graded-transfer series (docs/evidence.md): per shared fraction f of planted parts, the
# transfer gain, the preserved and exclusive shares beside their nulls and the deep-linear
# analogue; the table, figure and trend claim rows under results/evidence/graded/.


rule graded_transfer:
    input:
        "results/knowledge/overlap.parquet",
        "results/knowledge/overlap_samples.parquet",
        runs=[
            ts_paths.run_summary(exp, regime, seed)
            for exp in ts_graded.series(config)
            for regime in ("finetune", "scratch")
            for seed in config["seeds"]
        ],
        data=[
            ts_paths.data_dir(config["experiments"][exp]["dataset"])
            for exp in ts_graded.series(config)
        ],
    output:
        figure=report(
            ts_graded.FIGURE,
            caption="../report/graded_transfer.rst",
            category="Evidence",
        ),
        table=ts_graded.output("graded.parquet"),
        csv=ts_graded.output("graded.csv"),
        seeds=ts_graded.output("graded_seeds.parquet"),
        trends=ts_graded.output("graded_trends.parquet"),
        claims=ts_graded.output("claim_rows.parquet"),
    log:
        "logs/evidence/graded.log",
    resources:
        runtime=runtime_for("graded_transfer"),
        mem_mb=mem_mb_for("graded_transfer"),
    params:
        settings=json.dumps(ts_graded.stage_settings(config), sort_keys=True),
        data=" ".join(
            f"{exp}={ts_paths.data_dir(config['experiments'][exp]['dataset'])}"
            for exp in ts_graded.series(config)
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.table),
        dpi=config["figures"]["dpi"],
    shell:
        "transferscope knowledge graded --settings {params.settings:q} --runs {input.runs} "
        "--data {params.data} --out-dir results/knowledge --evidence-dir {params.out_dir} "
        "--figure {output.figure} --dpi {params.dpi} 2> {log}"
