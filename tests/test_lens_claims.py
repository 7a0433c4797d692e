"""Claims of the representation and theory lenses on constructed tables with known answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import permutation_test

from transferscope.knowledge import claims, lens_claims


def test_exact_two_sample_p_matches_scipy_enumeration():
    a, b = np.array([0.9, 1.1, 1.3, 1.2]), np.array([0.2, 0.5, 0.4, 1.0])
    ref = permutation_test(
        (a, b), lambda x, y: x.mean() - y.mean(), permutation_type="independent",
        alternative="greater", n_resamples=np.inf,
    )  # fmt: skip
    arrangements = 70  # C(8, 4)
    greater = (1 + ref.pvalue * arrangements) / (1 + arrangements)  # the +1 rule
    assert lens_claims.exact_two_sample_p(a, b) == pytest.approx(min(1, 2 * greater))


def test_exact_sign_flip_p_counts_every_flip():
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # only the observed signs (and none other) reach the observed mean: 2·(1 + 1)/(1 + 32)
    assert lens_claims.exact_sign_flip_p(d) == pytest.approx(4 / 33)
    assert lens_claims.too_few(128, 0.05) == ""  # 4/129 < 0.05
    assert "add seeds" in lens_claims.too_few(32, 0.05)
    assert "add seeds" in lens_claims.too_few(8, 0.05)


def _phase(offset: float, std: float, n: int = 50):
    rows = []
    for theta in (0.0, 0.5, 1.0):
        for gamma in (0.5, 1.5):
            theory = np.cos(theta) - gamma / 4
            rows.append(dict(theta=theta, gamma=gamma, sigma=0.2, theory=theory,
                             simulation=theory + offset, sim_std=std, n_instances=n,
                             n_unconverged=0, difference=abs(offset)))  # fmt: skip
    return pl.DataFrame(rows)


@pytest.mark.parametrize(
    ("offset", "std", "expected"),
    [(0.001, 0.01, claims.SUPPORTED), (0.3, 0.01, claims.CONTRADICTED),
     (0.01, 0.5, claims.NULL)],
)  # fmt: skip
def test_theory_equals_simulation_reaches_every_verdict(tmp_path, offset, std, expected):
    _phase(offset, std).write_parquet(tmp_path / "phase_linear.parquet")
    rows = [r for r in lens_claims.theory_claims(tmp_path, 0.05) if "equals" in r["claim"]]
    table = claims.finalise(rows, 0.05)
    assert table["verdict"].to_list() == [expected]


def test_negative_transfer_sign_is_tested_against_permuted_predictions(tmp_path):
    rows = []
    for i in range(40):
        theory = (-1) ** i * (0.1 + i / 100)
        rows.append(dict(theta=i / 40, gamma=1.5, sigma=0.2, theory=theory, simulation=theory,
                         sim_std=0.01, n_instances=8, n_unconverged=0, difference=0.0))  # fmt: skip
    pl.DataFrame(rows).write_parquet(tmp_path / "phase_linear.parquet")
    found = [r for r in lens_claims.theory_claims(tmp_path, 0.05) if "negative" in r["claim"]]
    assert found[0]["observed"] == 1.0 and found[0]["null"] == pytest.approx(0.5, abs=0.05)
    assert claims.finalise(found, 0.05)["verdict"][0] == claims.SUPPORTED


# ------------------------------------------------------------------ control: early P at chance


def test_accuracy_difference_p_is_fishers_exact_test():
    from scipy.stats import fisher_exact

    assert lens_claims.accuracy_difference_p(80, 60, 100) == pytest.approx(
        fisher_exact([[80, 20], [60, 40]]).pvalue
    )
    assert lens_claims.accuracy_difference_p(50, 50, 100) == pytest.approx(1.0)


def _intermediate(tmp_path, experiment, final, early, scratch, early_source, seeds=(0, 1)):
    rows = []
    for seed in seeds:
        rows += [
            dict(experiment=experiment, seed=seed, pretrain_epoch=1, reference=False,
                 source_test_accuracy=early_source, target_test_accuracy=early),
            dict(experiment=experiment, seed=seed, pretrain_epoch=8, reference=False,
                 source_test_accuracy=1.0, target_test_accuracy=final),
            dict(experiment=experiment, seed=seed, pretrain_epoch=None, reference=True,
                 source_test_accuracy=None, target_test_accuracy=scratch),
        ]  # fmt: skip
    (tmp_path / experiment).mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / experiment / "intermediate.parquet")


@pytest.mark.parametrize(
    ("final", "early", "scratch", "early_source", "expected"),
    [
        (0.95, 0.60, 0.40, 0.20, [claims.SUPPORTED, claims.SUPPORTED]),  # both effects planted
        (0.60, 0.60, 0.60, 0.20, [claims.NULL, claims.NULL]),  # no effect anywhere
        (0.40, 0.60, 0.80, 0.20, [claims.CONTRADICTED, claims.CONTRADICTED]),
        (0.95, 0.60, 0.40, 1.00, ["not testable", "not testable"]),  # early P already learned
    ],
)  # fmt: skip
def test_early_checkpoint_control_reaches_every_verdict(
    tmp_path, prepared, final, early, scratch, early_source, expected
):
    """digits: 5 source classes (chance ≈ 0.2) and a target test set of several hundred."""
    from transferscope.data import read_manifest

    _intermediate(tmp_path, "digits_resnet", final, early, scratch, early_source)
    status = {("digits_resnet", r): {"learned": True} for r in ("finetune", "scratch")}
    rows = lens_claims.early_checkpoint_claims(
        tmp_path, {"digits_resnet": prepared["digits"]}, status, claims._unlearned, 0.05
    )
    table = claims.finalise(rows, 0.05)
    assert table["verdict"].to_list() == expected
    n_test = read_manifest(prepared["digits"])["tasks"]["target"]["test"]
    assert table["n"].to_list() == [2 * n_test, 2 * n_test]  # test items × seeds
    if expected[0] == "not testable":
        assert "already learned the source task" in table["reason"][0]


def _representation_tables(root, experiment):
    d = root / experiment
    d.mkdir()
    pl.DataFrame({"pair_type": ["P-T/P-T", "RI-T/RI-T"] * 3, "barrier_loss": [0.1, 0.9] * 3}
                 ).write_parquet(d / "barriers.parquet")  # fmt: skip
    pl.DataFrame({"diagonal": [True] * 6, "pair_type": ["P-T/P", "RI-T/P"] * 3,
                  "seed_a": [0, 0, 1, 1, 2, 2], "cka": [0.9, 0.3] * 3}
                 ).write_parquet(d / "cka.parquet")  # fmt: skip
    pl.DataFrame({"pair_type": ["P-T/P", "RI-T/P"] * 3, "seed_a": [0, 0, 1, 1, 2, 2],
                  "relative": [0.1, 1.0] * 3}).write_parquet(d / "distances.parquet")  # fmt: skip
    pl.DataFrame({"pair_type": ["P-T/P-T", "RI-T/RI-T"] * 3, "both_wrong": [8, 2] * 3,
                  "uncommon": [2, 8] * 3}).write_parquet(d / "mistakes.parquet")  # fmt: skip


def test_representation_claims_read_only_the_configured_experiments(tmp_path):
    """results/analyses may hold another config's experiments (the committed default run's,
    beside a paper config's): they are not this run's claims."""
    for experiment in ("ours", "left_over"):
        _representation_tables(tmp_path, experiment)
    status = {("ours", r): {"learned": True} for r in ("finetune", "scratch")}
    rows = lens_claims.representation_claims(
        tmp_path, status, claims._unlearned, 0.05, experiments={"ours"}
    )
    assert rows and {r["experiment"] for r in rows} == {"ours"}
    everything = lens_claims.representation_claims(tmp_path, status, claims._unlearned, 0.05)
    assert {r["experiment"] for r in everything} == {"ours", "left_over"}


def test_evidence_claim_rows_round_trip_and_get_their_verdict_with_the_rest(tmp_path):
    """An evidence stage writes rows without verdicts; the claims table gives them verdicts
    (supported / not distinguishable / not testable) and Holm-adjusts them with the others."""
    from transferscope.knowledge.claims import finalise, read_claim_rows, write_claim_rows

    base = dict(study="control", claim="c", experiment="e", kind="AND", metric="m", null_name="x")
    rows = [
        dict(base, observed=0.9, null=0.5, excess=0.4, low=0.2, high=0.6, p_value=1e-4,
             direction=1, n=30),
        dict(base, observed=0.52, null=0.5, excess=0.02, low=-0.1, high=0.14, p_value=0.4,
             direction=1, n=30),
        dict(base, reason="control did not learn"),
    ]  # fmt: skip
    path = tmp_path / "claim_rows.parquet"
    write_claim_rows(rows, path)
    assert (tmp_path / "claim_rows.csv").is_file()
    back = read_claim_rows(path)
    table = finalise(back, alpha=0.05)
    assert table["verdict"].to_list() == [
        "supported",
        "not distinguishable from the null",
        "not testable",
    ]
    # Holm over the two testable rows: the smaller p doubles
    assert table["p_adjusted"][0] == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="unknown columns"):
        write_claim_rows([dict(base, verdict="supported")], tmp_path / "bad.parquet")


def test_accuracy_difference_interval_equals_newcombes_published_example():
    """Newcombe (1998), Table II, example (a): 56/70 − 48/80 = 0.2, method 10 gives
    0.0524 to 0.3339; and the interval shrinks as the test set grows."""
    low, high = lens_claims.accuracy_difference_interval(56, 70, 48, 80, 0.95)
    assert low == pytest.approx(0.0524, abs=5e-5) and high == pytest.approx(0.3339, abs=5e-5)
    wide = lens_claims.accuracy_difference_interval(8, 10, 6, 10, 0.95)
    narrow = lens_claims.accuracy_difference_interval(800, 1000, 600, 1000, 0.95)
    assert wide[0] < narrow[0] < 0.2 < narrow[1] < wide[1]
