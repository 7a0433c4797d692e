# Theory lens: closed forms, deep-linear simulations, phase diagrams, ReLU student-teacher.


rule theory:
    input:
        theory_settings_changed,
    output:
        report(
            "results/theory/phase_diagrams.png",
            caption="../report/theory_phase.rst",
            category="Theory",
        ),
        report(
            "results/theory/double_descent.png",
            caption="../report/theory_double_descent.rst",
            category="Theory",
        ),
        report(
            "results/theory/relu_transfer.png",
            caption="../report/theory_relu.rst",
            category="Theory",
        ),
        "results/theory/theory.json",
        "results/theory/phase_linear.parquet",
        "results/theory/phase_finetune.parquet",
        "results/theory/relu.parquet",
    log:
        "logs/theory.log",
    threads: 2
    resources:
        runtime=runtime_for("theory"),
        mem_mb=mem_mb_for("theory"),
    params:
        theory=lambda wildcards: json.dumps(config["theory"], sort_keys=True),
    shell:
        "transferscope theory --params {params.theory:q} --out results/theory 2> {log}"
