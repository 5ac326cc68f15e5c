"""Block-wise reconstruction: correct token layouts, lower loss, and resumable runs."""

import copy

import pytest
import torch

from vggt_quant_core.calib import BlockReconstructor, EngineConfig, fp_chain
from vggt_quant_core.model import load_vggt
from vggt_quant_core.quant import QuantConfig, quantization_disabled, quantize


@pytest.fixture(scope="module")
def wrapped(small_pool, golden_dir):
    model = load_vggt(golden_dir / "tiny_a")
    windows = [small_pool.load(i) for i in (0, 4, 8)]
    quantize(model, QuantConfig(method="dsfq", w_bits=4, a_bits=4, learnable_clip=True), calibration_images=windows,
             freeze=False)
    return model, windows


def test_chain_equals_the_blocks_of_a_full_forward(wrapped):
    """The engine's chain of block outputs equals the outputs hooked from model.forward (quantization off);
    global blocks get (B, S*P, C) tokens, frame blocks (B*S, P, C)."""
    model, windows = wrapped
    hooked = {}
    handles = []
    for kind in ("frame", "global"):
        for i, block in enumerate(getattr(model.aggregator, f"{kind}_blocks")):
            handles.append(block.register_forward_hook(
                lambda m, a, out, name=f"aggregator.{kind}_blocks.{i}": hooked.setdefault(name, out)))
    try:
        with torch.no_grad(), quantization_disabled(model):
            model(windows[1])
    finally:
        for handle in handles:
            handle.remove()
    frames, tokens = windows[1].shape[0], hooked["aggregator.frame_blocks.0"].shape[1]
    names = []
    for name, outputs in fp_chain(model, windows[:2]):
        names.append(name)
        assert torch.equal(outputs[1], hooked[name]), name
        expected = (frames, tokens) if ".frame_" in name else (1, frames * tokens)
        assert tuple(outputs[1].shape[:2]) == expected, name
    assert names[:2] == ["aggregator.frame_blocks.0", "aggregator.global_blocks.0"] and len(names) == 12


def _learned(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(("log_scale", "clip_logit"))}


def test_calibration_lowers_block_losses(wrapped):
    model, windows = wrapped
    model = copy.deepcopy(model)
    report = BlockReconstructor(model, EngineConfig(epochs=3), log_fn=lambda m: None).run(windows)
    blocks = report["blocks"]
    assert len(blocks) == 12 and all(b["after"] <= b["before"] * 1.001 for b in blocks)
    assert sum(b["after"] for b in blocks) < 0.9 * sum(b["before"] for b in blocks)
    assert report["peak_memory_bytes"] > 0 and blocks[1]["shape"][0] == 1  # a global block: batch 1


def test_interrupted_run_resumes_to_the_same_result(wrapped, tmp_path):
    model, windows = wrapped
    config = EngineConfig(epochs=2, seed=5)
    reference = copy.deepcopy(model)
    BlockReconstructor(reference, config, log_fn=lambda m: None).run(windows)

    class Stop(Exception):
        pass

    def stop_after_five(message):
        if "block 5/" in message:
            raise Stop

    interrupted = copy.deepcopy(model)
    with pytest.raises(Stop):
        BlockReconstructor(interrupted, config, work_dir=tmp_path, log_fn=stop_after_five).run(windows)
    assert len(list((tmp_path / "blocks").iterdir())) == 5
    resumed = copy.deepcopy(model)  # a fresh process: nothing learned in memory
    report = BlockReconstructor(resumed, config, work_dir=tmp_path, log_fn=lambda m: None).run(windows)
    assert [b["resumed"] for b in report["blocks"]] == [True] * 5 + [False] * 7
    expected, actual = _learned(reference), _learned(resumed)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def test_quantized_chain_and_bad_config(wrapped):
    model, windows = wrapped
    report = BlockReconstructor(copy.deepcopy(model), EngineConfig(epochs=1, chain="quant"),
                                log_fn=lambda m: None).run(windows[:2])
    assert report["config"]["chain"] == "quant"
    with pytest.raises(ValueError, match="fisher_weights"):
        BlockReconstructor(model, EngineConfig(loss="fisher"))
    with pytest.raises(ValueError, match="loss must be"):
        EngineConfig(loss="l1")
