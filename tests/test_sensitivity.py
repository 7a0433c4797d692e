"""The sensitivity sweep's wiring: a τ / q_thres variant re-decomposes the default extraction's
cached values, a baseline variant evaluates the checkpoints again (rules/sensitivity.smk)."""

from __future__ import annotations

import yaml

from transferscope.config import load_config, sensitivity_reuses_values

from .slurm_cluster import REPO, dry_run


def test_tau_and_q_variants_reuse_values_and_a_baseline_variant_does_not(tmp_path):
    config = load_config(REPO / "config/smoke.yaml")
    config["sensitivity"] = {
        "variants": {
            "tau_0.1": {"tau": 0.1},
            "q": {"q_thres": 0.02},
            "alt": {"baseline": "alternative"},
        }
    }
    path = tmp_path / "sensitivity.yaml"
    path.write_text(yaml.safe_dump(config))
    assert sensitivity_reuses_values(config, "tau_0.1") and sensitivity_reuses_values(config, "q")
    assert not sensitivity_reuses_values(config, "alt")
    jobs = [
        j
        for j in dry_run(str(path), ("results/sensitivity/verdicts.parquet",)).jobs
        if j.rule == "sensitivity_interactions"
    ]
    assert {j.fields["wildcards"].split("variant=")[1].split(",")[0] for j in jobs} == {
        "tau_0.1",
        "q",
        "alt",
    }
    for job in jobs:
        variant = job.fields["wildcards"].split("variant=")[1].split(",")[0]
        reuses = "--values-from interactions/" in job.shell
        assert reuses == (variant != "alt"), job.shell
        if reuses:  # the default extraction of the same (experiment, seed) is the job's input
            source = job.shell.split("--values-from ")[1].split()[0]
            assert source in job.fields["input"], job.fields["input"]
