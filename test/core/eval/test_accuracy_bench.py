"""The accuracy benchmark: rows scored like ``eval``, calibrated methods, token statistics, the command."""

import json

import pytest

from vggt_quant_core.cli.main import main
from vggt_quant_core.data import HELD_OUT_SEED_BASE
from vggt_quant_core.eval.accuracy_bench import (FULL_PRECISION, AccuracyBenchSettings, check_methods, run_accuracy,
                                                 token_activation_statistics)
from vggt_quant_core.eval.evaluate import HEADLINE_METRICS, evaluate_model
from vggt_quant_core.eval.fidelity_bench import scene_windows
from vggt_quant_core.presets import build_preset, get_preset

SMALL = AccuracyBenchSettings(scenes=1, frame_counts=(2, 3), statistics_windows=1, pool_scenes=2, pool_frames=4,
                              window=2, stride=2, samples=2, epochs=1, fisher_samples=1)


@pytest.fixture(scope="module")
def random_model():
    return build_preset(get_preset("vggt-tiny-random"))


@pytest.fixture(scope="module")
def report(random_model):
    return run_accuracy(random_model, ["rtn", "calib-dsfq"], [(16, 16), (4, 4)], SMALL, 56, 42)


def test_rows_are_scored_like_eval_and_unquantized_rtn_equals_full_precision(random_model, report):
    assert [(r["method"], r["bits"]) for r in report["rows"]] == [
        (FULL_PRECISION, "w32a32"), ("rtn", "w16a16"), ("rtn", "w4a4"), ("calib-dsfq", "w16a16"),
        ("calib-dsfq", "w4a4")]
    full = report["rows"][0]["frames"]
    for frames in (2, 3):
        reference = evaluate_model(random_model, [HELD_OUT_SEED_BASE], frames, 56, 42)
        assert full[str(frames)] == {k: reference["model"][k] for k in HEADLINE_METRICS}
        assert report["baseline"][str(frames)]["auc@30"] == 0
    assert report["rows"][1]["frames"] == full            # 16 bits: nothing is quantized
    assert report["rows"][2]["frames"] != full


def test_calibrated_rows_record_their_calibration(report):
    calibrated = report["rows"][4]
    assert calibrated["strategy"] == "nfds" and len(calibrated["samples"]) == 2 and calibrated["pool_size"] == 4
    assert all(sample.startswith("scene") for sample in calibrated["samples"])  # training-seed sequences
    assert report["held_out_seeds"] == [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE]


def test_token_statistics_find_the_massive_special_channels_of_the_outlier_model(random_model):
    windows = scene_windows(range(1), 2, 224)
    outlier = token_activation_statistics(build_preset(get_preset("vggt-outlier")), windows)["summary"]
    for block in ("frame", "global"):
        residual = outlier[f"{block}/residual"]
        # vggt-outlier sets 4 channels of the camera and register tokens to +-50 (outlier_model.py)
        assert residual["camera_massive_channels"]["median"] == 4
        assert residual["register_massive_channels"]["median"] == 4
        assert residual["camera_top_ratio"]["median"] > 5 * residual["patch_top_ratio"]["median"]
    plain = token_activation_statistics(random_model, windows)["summary"]
    assert all(row["camera_massive_channels"]["worst"] == 0 for row in plain.values())


def test_bench_accuracy_command_writes_the_tables(tmp_path, capsys):
    out = tmp_path / "accuracy.json"
    assert main(["bench", "accuracy", "--model", "vggt-tiny-random", "--methods", "rtn", "--bits", "w8a8",
                 "--frames", "2", "--scenes", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["arguments"]["methods"] == "rtn" and report["image_size_wh"] == [224, 168]
    screen = capsys.readouterr().out
    assert "| w8a8 | rtn |" in screen and "| w32a32 | full precision |" in screen and "frame/residual" in screen
    with pytest.raises(ValueError, match="unknown method"):
        check_methods(["calib-gptq"])
    assert main(["bench", "accuracy", "--methods", "gptq"]) == 2
