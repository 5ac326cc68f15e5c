"""Reusing per-frame model work across overlapping windows: the outputs equal recomputing bit for bit (float,
bf16 autocast and an integer-quantized model), and only what is new is computed."""

import copy
import functools
import logging

import numpy as np
import pytest
import torch

from helpers_truth import rig
from vggt_quant_core.inference import run_vggt
from vggt_quant_core.presets import load_model
from vggt_quant_core.quant import QuantConfig, quantize
from vggt_quant_core.stream import estimator_from_model
from vggt_quant_core.stream.frame_cache import FrameTokenCache, reuse_problem

WIDTH, HEIGHT = 56, 42    # any multiple of the patch size: small keeps the suite fast


@pytest.fixture(scope="module")
def trained():
    return load_model(None, "vggt-tiny-synth")[0]


@pytest.fixture(scope="module")
def images():
    frames = rig(10, WIDTH, HEIGHT).images[0]
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def _variant(model, kind):
    """(model, precision): float32, bf16 autocast, or W8A8 with int8 kernels in DINOv2 and the aggregator."""
    if kind == "w8a8":
        model = quantize(copy.deepcopy(model), QuantConfig(method="rtn", w_bits=8, a_bits=8, include_patch_embed=True),
                         log_fn=lambda line: None)
    return model, "bf16" if kind == "bf16" else "fp32"


@pytest.mark.parametrize("kind", ["fp32", "bf16", "w8a8"])
def test_reused_frames_give_the_outputs_of_recomputing_bit_for_bit(trained, images, kind, request):
    if kind == "w8a8":  # the integer GEMMs on every CPU (auto would take the float reference without VNNI)
        request.getfixturevalue("int_mm_as_with_vnni")
    model, precision = _variant(trained, kind)
    cache = FrameTokenCache()
    # windows of 4 every 2, then one composed after a dropped window: the kept anchors 4-5, then 8-9
    windows = [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 8, 9]]
    counts = []
    for window in windows:
        before = (cache.computed_patches, cache.computed_blocks)
        reused = run_vggt(model, images[window], precision,
                          frame_tokens=functools.partial(cache.frame_tokens, keys=[(t, 0) for t in window]))
        counts.append((cache.computed_patches - before[0], cache.computed_blocks - before[1]))
        plain = run_vggt(model, images[window], precision)
        assert reused.keys() == plain.keys()
        for name, value in plain.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(reused[name], value), (kind, window, name)
        assert len(cache) == len(window)   # what is kept: this window's frames only
    # 2 new frames per later window: 2 patch embeddings, and the first block for them and the new first frame
    assert counts == [(4, 4), (2, 3), (2, 3)]
    if kind == "w8a8":
        assert {m.active_backend for m in model.modules() if hasattr(m, "active_backend")} - {None} != {"reference"}


def test_the_estimator_reuses_frames_given_their_keys_and_recomputes_without(trained, images):
    estimator = estimator_from_model(trained, WIDTH, "tiny-synth")
    first = estimator.predict(images[:4], [(t, 0) for t in range(4)])
    second = estimator.predict(images[2:6], [(t, 0) for t in range(2, 6)])
    again = estimator.predict(images[2:6], None)
    for name in ("pose_enc", "depth", "depth_conf", "world_points"):
        assert torch.equal(second[name], again[name]) and not torch.equal(first[name], second[name])


def test_one_activation_scale_per_tensor_mixes_frames_and_turns_reuse_off(trained, images, caplog):
    model = quantize(copy.deepcopy(trained), QuantConfig(method="rtn", w_bits=8, a_bits=8, a_granularity="per_tensor"),
                     log_fn=lambda line: None)
    problem = reuse_problem(model)
    assert "aggregator.frame_blocks.0.attn.qkv quantizes activations with one dynamic scale per tensor" in problem
    assert reuse_problem(trained) is None
    with caplog.at_level(logging.WARNING):
        estimator = estimator_from_model(model, WIDTH, "per-tensor")
    assert "frames will not be reused across windows" in caplog.text
    estimator.predict(images[:4], [(t, 0) for t in range(4)])
    reused = estimator.predict(images[2:6], [(t, 0) for t in range(2, 6)])
    plain = run_vggt(model, images[2:6])
    assert torch.equal(reused["depth"], plain["depth"])


def test_keys_must_name_each_image_once(trained, images):
    cache = FrameTokenCache()
    with pytest.raises(ValueError, match="one distinct key per image"):
        run_vggt(trained, images[:3], frame_tokens=functools.partial(cache.frame_tokens, keys=[1, 1, 2]))
    assert np.isfinite(run_vggt(trained, images[:3], frame_tokens=functools.partial(
        cache.frame_tokens, keys=[1, 2, 3]))["depth"].numpy()).all()
