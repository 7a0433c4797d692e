"""CLI logging: one setup, level from -v/-q, and the training throughput in the job log."""

from __future__ import annotations

import json
import logging
import re

import pytest

from transferscope import cli, log
from transferscope.config import run_settings


@pytest.fixture(autouse=True)
def restore_logger():
    """main() configures the package logger; give later tests the state they started with."""
    logger = logging.getLogger("transferscope")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers, logger.level = handlers, level


@pytest.fixture(scope="module")
def digits(smoke_config, tmp_path_factory):
    from transferscope.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", smoke_config["datasets"]["digits"], out)
    return out


def _train(smoke_config, digits, out, *flags: str) -> None:
    settings = run_settings(smoke_config, "digits_resnet", "scratch", 0)
    settings["training"]["epochs"] = 1
    cli.main(
        [*flags, "train", "--settings", json.dumps(settings), "--data", str(digits)]
        + ["--out", str(out), "--threads", "1", "--quiet"]
    )


def test_levels():
    assert log.level() == logging.INFO
    assert log.level(verbose=1) == logging.DEBUG and log.level(verbose=5) == logging.DEBUG
    assert log.level(quiet=1) == logging.WARNING and log.level(quiet=2) == logging.ERROR
    assert log.level(quiet=9) == logging.CRITICAL


def test_global_quiet_is_not_the_stage_quiet():
    parser = cli.build_parser()
    args = parser.parse_args(["-qq", "train", "--data", "d", "--out", "o"])
    assert (args.log_quiet, args.quiet, args.log_verbose) == (2, False, 0)
    args = parser.parse_args(["-v", "train", "--data", "d", "--out", "o", "--quiet"])
    assert (args.log_quiet, args.quiet, args.log_verbose) == (0, True, 1)


def test_training_epoch_logs_samples_per_second(smoke_config, digits, tmp_path, capsys):
    _train(smoke_config, digits, tmp_path / "run", "-v")
    err = capsys.readouterr().err
    line = re.search(
        r"INFO transferscope\.training: digits_resnet/scratch/seed0 epoch 1/1: train loss "
        r"[\d.]+, test acc [\d.]+, ([\d.]+) samples/s \([\d.]+ s\)",
        err,
    )
    assert line, err
    assert float(line.group(1)) > 0


def test_quiet_silences_info_lines(smoke_config, digits, tmp_path, capsys):
    _train(smoke_config, digits, tmp_path / "run", "-q")
    err = capsys.readouterr().err
    assert "INFO" not in err and "samples/s" not in err, err
    assert (tmp_path / "run" / "summary.json").is_file()  # it trained, silently
    logging.getLogger("transferscope.training").warning("still shown")
    assert "WARNING transferscope.training: still shown" in capsys.readouterr().err
