"""Precision policy, reconstruction assembly and confidence filtering."""

import copy

import numpy as np
import pytest
import torch

from helpers import load_pt, rel_to_max
from vggt_quant_core.geometry import pose_encoding_to_extri_intri
from vggt_quant_core.inference import (Reconstruction, colored_points, confidence_mask,
                                       predictions_to_reconstruction, report_progress, resolve_precision,
                                       run_vggt)
from vggt_quant_core.model import load_vggt
from vggt_quant_core.quant import QuantConfig, quantize, quantized_layers


@pytest.fixture(scope="module")
def tiny(golden_dir):
    return load_vggt(golden_dir / "tiny_a"), load_pt(golden_dir / "tiny_a" / "inputs.pt")["images"]


def test_run_vggt_fp32_equals_the_plain_forward(tiny):
    model, images = tiny
    with torch.no_grad():
        reference = model(images)
    out = run_vggt(model, images, precision="fp32")
    assert torch.equal(out["depth"], reference["depth"])


def test_run_vggt_fuses_a_quantized_models_residual_epilogues_with_the_same_outputs(tiny):
    model, images = tiny
    quantized = quantize(copy.deepcopy(model), QuantConfig(method="rtn"), log_fn=lambda message: None)
    with torch.no_grad():
        unfused = quantized(images)
    out = run_vggt(quantized, images, precision="fp32")
    deferred = {name for name, layer in quantized_layers(quantized).items() if layer.defer_epilogue}
    assert deferred and all(name.endswith(("attn.proj", "mlp.fc2")) for name in deferred)
    assert len(deferred) == len(quantized_layers(quantized)) // 2
    for key in ("depth", "pose_enc", "world_points"):
        assert torch.allclose(out[key], unfused[key], rtol=1e-5, atol=1e-5 * unfused[key].abs().max()), key


def test_bf16_autocast_keeps_heads_fp32_and_stays_close(tiny):
    model, images = tiny
    reference = run_vggt(model, images, precision="fp32")
    out = run_vggt(model, images, precision="bf16")
    assert out["depth"].dtype == out["pose_enc"].dtype == torch.float32
    assert 0 < rel_to_max(out["depth"], reference["depth"]) < 0.1


def test_precision_must_match_reduced_storage(golden_dir):
    model = load_vggt(golden_dir / "tiny_a", dtype=torch.bfloat16)
    assert resolve_precision("auto", model, torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="stored in torch.bfloat16"):
        resolve_precision("fp32", model, torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int3", model, torch.device("cpu"))


def test_images_outside_unit_range_are_rejected(tiny):
    model, images = tiny
    with pytest.raises(ValueError, match="0-255 data"):
        run_vggt(model, images * 255)


def test_reconstruction_unprojects_depth_with_predicted_cameras(tiny):
    model, images = tiny
    predictions = run_vggt(model, images)
    recon = predictions_to_reconstruction(predictions, point_source="depth")
    extrinsics, intrinsics = pose_encoding_to_extri_intri(predictions["pose_enc"], images.shape[-2:])
    assert np.allclose(recon.extrinsics, extrinsics[0].numpy()) and np.allclose(recon.intrinsics, intrinsics[0])
    # each point lies on its pixel's ray at its depth: camera z equals the depth map
    rotation, translation = recon.extrinsics[:, :3, :3], recon.extrinsics[:, :3, 3]
    camera = np.einsum("sij,shwj->shwi", rotation, recon.points) + translation[:, None, None]
    assert np.allclose(camera[..., 2], recon.depth, rtol=1e-4, atol=1e-5)
    assert recon.images.dtype == np.uint8 and recon.images.shape == (2, 42, 56, 3)
    assert np.array_equal(recon.images, (images.permute(0, 2, 3, 1) * 255).round().byte().numpy())
    pointmap = predictions_to_reconstruction(predictions, point_source="pointmap")
    assert np.array_equal(pointmap.points, predictions["world_points"][0].numpy())


def test_strided_reconstruction_is_the_full_one_subsampled(tiny):
    model, images = tiny
    predictions = run_vggt(model, images)
    for source in ("depth", "pointmap"):
        full = predictions_to_reconstruction(predictions, point_source=source)
        strided = predictions_to_reconstruction(predictions, point_source=source, pixel_stride=3)
        assert strided.points.shape == (2, 14, 19, 3)  # 42x56 -> ceil(42/3) x ceil(56/3)
        assert np.allclose(strided.points, full.points[:, ::3, ::3], rtol=1e-5, atol=1e-6)
        assert np.array_equal(strided.images, full.images[:, ::3, ::3])
        assert np.array_equal(strided.points_conf, full.points_conf[:, ::3, ::3])
    assert np.allclose(strided.intrinsics[:, :2], full.intrinsics[:, :2] / 3)
    with pytest.raises(ValueError, match="pixel_stride"):
        predictions_to_reconstruction(predictions, pixel_stride=0)


def test_given_intrinsics_replace_the_predicted_ones(tiny):
    model, images = tiny
    predictions = run_vggt(model, images)
    calibrated = torch.tensor([[40.0, 0, 28], [0, 40, 21], [0, 0, 1]]).expand(2, 3, 3)
    recon = predictions_to_reconstruction(predictions, intrinsics=calibrated, pixel_stride=2)
    assert np.allclose(recon.intrinsics[0], [[20, 0, 14], [0, 20, 10.5], [0, 0, 1]])
    # the camera-frame x of a pixel is (u - cx) * depth / fx with the given intrinsics
    rotation, translation = recon.extrinsics[:, :3, :3], recon.extrinsics[:, :3, 3]
    camera = np.einsum("sij,shwj->shwi", rotation, recon.points) + translation[:, None, None]
    u = np.arange(recon.depth.shape[2]) * 2.0
    assert np.allclose(camera[..., 0], (u - 28) * recon.depth / 40, rtol=1e-4, atol=1e-4)


def test_confidence_mask_percentile_and_floor():
    conf = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    assert confidence_mask(conf, 50).sum() == 50  # keeps values >= median (50.5) -> 51..100
    assert confidence_mask(conf, 0, min_conf=90).sum() == 10
    conf[0, 0] = np.nan
    assert not confidence_mask(conf, 0)[0, 0]
    with pytest.raises(ValueError):
        confidence_mask(conf, 100)


def test_degenerate_cameras_give_no_nonfinite_points():
    recon = Reconstruction(images=np.zeros((1, 2, 2, 3), np.uint8), depth=np.ones((1, 2, 2), np.float32),
                           depth_conf=np.full((1, 2, 2), 2, np.float32), extrinsics=np.zeros((1, 3, 4), np.float32),
                           intrinsics=np.eye(3, dtype=np.float32)[None],
                           points=np.array([[[[np.inf, 0, 1], [0, 0, 1]], [[np.nan, 0, 1], [1, 1, 1]]]], np.float32),
                           points_conf=np.full((1, 2, 2), 2, np.float32))
    xyz, rgb = colored_points(recon, percentile=0)
    assert xyz.shape == (2, 3) and np.isfinite(xyz).all() and rgb.shape == (2, 3)


def test_progress_reports_aggregator_layers(tiny):
    model, images = tiny
    messages = []
    with report_progress(model, messages.append, every_seconds=0):
        run_vggt(model, images)
    assert messages[-1].startswith(f"  aggregator layer {model.aggregator.depth}/{model.aggregator.depth}")
    assert all(not block._forward_hooks for block in model.aggregator.global_blocks)


def test_residual_stream_stays_float32_under_autocast(tiny):
    model, images = tiny
    block = model.aggregator.frame_blocks[0]
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook

    handles = [block.register_forward_hook(record("block")), block.attn.qkv.register_forward_hook(record("qkv"))]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            tokens, _ = model.aggregator(images[None])
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {"qkv": torch.bfloat16, "block": torch.float32}  # matmul in bf16, residual in fp32
    assert tokens[-1].dtype == torch.float32


def test_training_mode_does_not_return_images(tiny):
    model, images = tiny
    model.train()
    try:
        with torch.no_grad():
            assert "images" not in model(images)
    finally:
        model.eval()
