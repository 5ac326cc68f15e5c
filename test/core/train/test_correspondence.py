"""Correspondence targets (against analytic geometry and a photometric warp) and the auxiliary losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.model import VGGT, VGGTConfig
from vggt_quant_core.train.correspondence import (CorrespondenceProbe, bilinear_targets, patch_correspondence,
                                                  patch_matching_accuracy)
from vggt_quant_core.train.dataset import normalize_window

PATCH = 14


def _intrinsics(width, height, focal):
    return torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]], dtype=torch.float64)


def test_fronto_parallel_plane_under_sideways_motion_shifts_every_patch_by_f_b_over_z():
    # Plane at depth z, camera 1 moved b to the right of camera 0 (camera 1 from camera 0: x - b):
    # a point at pixel u in camera 1 sits at u + f b / z in camera 0.
    height, width, focal, z, b = 42, 56, 50.0, 2.0, 0.4
    depth = torch.full((1, 2, height, width), z, dtype=torch.float64)
    extrinsics = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    extrinsics[..., :3] = torch.eye(3, dtype=torch.float64)
    extrinsics[0, 1, 0, 3] = -b
    intrinsics = _intrinsics(width, height, focal).expand(1, 2, 3, 3)
    truth = patch_correspondence(depth, extrinsics, intrinsics, PATCH)
    expected_shift = focal * b / z / PATCH
    assert torch.allclose(truth.displacement[0, 0], torch.zeros(12, 2, dtype=torch.float64))
    inside = truth.valid[0, 1]
    assert inside.sum() == 9 and not inside.view(3, 4)[:, 3].any()  # the right column leaves frame 0
    assert torch.allclose(truth.displacement[0, 1][inside, 0], torch.full((9,), expected_shift, dtype=torch.float64))
    assert torch.allclose(truth.displacement[0, 1][inside, 1], torch.zeros(9, dtype=torch.float64))
    # The 3D points at the patch centres: on the plane in each camera, and b further right in camera 0's frame.
    centres = torch.stack(torch.meshgrid(torch.arange(3) * PATCH + 7.0, torch.arange(4) * PATCH + 7.0,
                                         indexing="ij")[::-1], -1).reshape(-1, 2).double()
    on_plane = torch.cat([(centres - torch.tensor([width / 2, height / 2])) * z / focal,
                          torch.full((12, 1), z, dtype=torch.float64)], -1)
    assert truth.has_depth.all()
    assert torch.allclose(truth.camera_points[0], on_plane.expand(2, 12, 3))
    assert torch.allclose(truth.frame0_points[0, 0], on_plane)
    assert torch.allclose(truth.frame0_points[0, 1], on_plane + torch.tensor([b, 0.0, 0.0], dtype=torch.float64))


def test_rendered_patch_centres_look_like_frame_0_where_the_targets_say():
    sequence = generate_sequence(3, 16, 112, 84, textures="rich").cameras[0]
    images = torch.from_numpy(sequence.images[:4]).permute(0, 3, 1, 2)[None].float() / 255
    target = normalize_window(images, torch.from_numpy(sequence.extrinsics[:4])[None],
                              torch.from_numpy(sequence.intrinsics[:4])[None],
                              torch.from_numpy(sequence.depth[:4])[None])
    truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], PATCH)
    rows, cols = torch.arange(6) * PATCH + 7, torch.arange(8) * PATCH + 7
    centres = images[0][:, :, rows][:, :, :, cols].flatten(2).transpose(1, 2)           # [S, N, 3]
    pixels = truth.location[0] * PATCH + 7
    grid = torch.stack([pixels[..., 0] / 111 * 2 - 1, pixels[..., 1] / 83 * 2 - 1], -1).float()
    warped = F.grid_sample(images[0, :1].expand(4, -1, -1, -1), grid[:, :, None], align_corners=True)[..., 0]
    valid = truth.valid[0, 1:]
    assert valid.float().mean() > 0.5
    warp_error = (warped.transpose(1, 2)[1:] - centres[1:]).abs().mean(-1)[valid].mean()
    identity_error = (centres[:1] - centres[1:]).abs().mean(-1)[valid].mean()
    assert warp_error < 0.35 * identity_error


def test_bilinear_targets_sum_to_one_and_put_their_mass_on_the_nearest_centres():
    weights = bilinear_targets(torch.tensor([[1.25, 0.5], [3.0, 2.0], [-1.0, 9.0]]), 3, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert weights[0].view(3, 4)[0, 1] == pytest.approx(0.375) and weights[0].view(3, 4)[1, 2] == pytest.approx(0.125)
    assert weights[1].view(3, 4)[2, 3] == pytest.approx(1.0)        # the last centre exactly
    assert weights[2].view(3, 4)[2, 0] == pytest.approx(1.0)        # clamped onto the grid


def _model():
    torch.manual_seed(0)
    return VGGT(VGGTConfig.from_dict({
        "img_size": 56, "embed_dim": 32, "aggregator": {"depth": 2, "num_heads": 2},
        "patch_embed": {"depth": 1, "num_heads": 2}, "camera_head": {"dim_in": 64, "trunk_depth": 1, "num_heads": 2},
        "depth_head": None, "point_head": None, "track_head": None}))


def _target(frames=3):
    sequence = generate_sequence(1, frames, 56, 42, textures="rich").cameras[0]
    images = torch.from_numpy(sequence.images).permute(0, 3, 1, 2)[None].float() / 255
    return normalize_window(images, torch.from_numpy(sequence.extrinsics)[None],
                            torch.from_numpy(sequence.intrinsics)[None], torch.from_numpy(sequence.depth)[None])


def test_probe_losses_match_a_direct_computation_and_train_the_hooked_block():
    model, target = _model(), _target()
    probe = CorrespondenceProbe(model, block=1, head=1)
    torch.nn.init.normal_(probe.flow.weight)
    probe.attach()
    model(target["images"])
    losses = probe.losses(target, {"flow": 1.0, "attention": 1.0})
    # Attention logits recomputed by hand from the block's own modules.
    block = model.aggregator.global_blocks[1]
    tokens, pos = model.aggregator.embed(target["images"])
    tokens = model.aggregator.frame_blocks[0](tokens, pos=pos).reshape(1, -1, 32)
    tokens = model.aggregator.global_blocks[0](tokens, pos=pos.reshape(1, -1, 2))
    tokens = model.aggregator.frame_blocks[1](tokens.reshape(3, -1, 32), pos=pos).reshape(1, -1, 32)
    qkv = block.attn.qkv(block.norm1(tokens)).reshape(1, -1, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = block.attn.rope(block.attn.q_norm(qkv[0]), pos.reshape(1, -1, 2)), \
        block.attn.rope(block.attn.k_norm(qkv[1]), pos.reshape(1, -1, 2))
    start, per_frame = model.aggregator.patch_start_idx, tokens.shape[1] // 3
    q = q[0, 1].reshape(3, per_frame, 16)[1:, start:]
    k = k[0, 1].reshape(3, per_frame, 16)[0, start:]
    logits = q @ k.T / 4.0
    truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], PATCH)
    weights = bilinear_targets(truth.location[0, 1:], 3, 4)
    valid = truth.valid[0, 1:]
    expected = (-(weights * logits.log_softmax(-1)).sum(-1))[valid].mean()
    assert losses["attention"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert math.isfinite(losses["flow"].item()) and losses["flow"] > 0
    (losses["flow"] + losses["attention"]).backward()
    assert block.attn.qkv.weight.grad.abs().sum() > 0 and probe.flow.weight.grad.abs().sum() > 0
    assert model.aggregator.global_blocks[1].mlp.fc2.weight.grad is not None
    assert 0.0 <= patch_matching_accuracy(probe, target) <= 1.0
    probe.detach()
    model(target["images"])
    with pytest.raises(RuntimeError, match="before a forward pass"):
        probe.losses(target, {"flow": 1.0, "attention": 1.0})


def test_point_probes_read_their_own_blocks_and_regress_the_patch_points():
    model, target = _model(), _target()
    probe = CorrespondenceProbe(model, block=1, camera_points_block=0, frame0_points_block=1)
    for read_out in (probe.camera_points, probe.frame0_points):
        torch.nn.init.normal_(read_out.weight, std=0.1)
    outputs = {}
    hooks = [model.aggregator.global_blocks[i].register_forward_hook(
        lambda module, args, output, i=i: outputs.__setitem__(i, output)) for i in (0, 1)]
    probe.attach()
    model(target["images"])
    losses = probe.losses(target, {"camera_points": 1.0, "frame0_points": 2.0})
    assert set(losses) == {"camera_points", "frame0_points"}
    truth = patch_correspondence(target["depth"], target["extrinsics"], target["intrinsics"], PATCH)
    start = model.aggregator.patch_start_idx
    for name, block in (("camera_points", 0), ("frame0_points", 1)):
        tokens = outputs[block].reshape(1, 3, -1, 32)[:, :, start:]
        error = F.smooth_l1_loss(getattr(probe, name)(tokens), getattr(truth, name).float(), reduction="none").sum(-1)
        assert losses[name].item() == pytest.approx(error[truth.has_depth].mean().item(), rel=1e-5)
    # The own-camera read-out hangs on block 0: its gradient reaches block 0 and not block 1.
    losses["camera_points"].backward()
    assert model.aggregator.global_blocks[0].mlp.fc2.weight.grad.abs().sum() > 0
    assert model.aggregator.global_blocks[1].mlp.fc2.weight.grad is None
    for hook in hooks:
        hook.remove()
    probe.detach()
    with pytest.raises(ValueError, match="frame-0 points block must be in 0..1"):
        CorrespondenceProbe(model, block=0, frame0_points_block=2)
    without_points = CorrespondenceProbe(model, block=0)
    without_points.attach()
    model(target["images"])
    with pytest.raises(ValueError, match="without a block for camera_points"):
        without_points.losses(target, {"camera_points": 1.0})


def test_probe_rejects_blocks_and_heads_the_model_does_not_have():
    with pytest.raises(ValueError, match="block must be in 0..1"):
        CorrespondenceProbe(_model(), block=2)
    with pytest.raises(ValueError, match="head must be in 0..1"):
        CorrespondenceProbe(_model(), block=0, head=2)
