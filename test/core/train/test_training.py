"""Training data (cache, windows, VGGT's normalisation) and the training loop (loss goes down, resume is exact)."""

import json
import math

import numpy as np
import pytest
import torch

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.geometry import unproject_depth_map_to_point_map
from vggt_quant_core.model import VGGT, VGGTConfig, load_vggt
from vggt_quant_core.train.dataset import (CacheSpec, WindowSampler, build_scene_cache, load_scene_cache,
                                           normalize_window, window_batch)
from vggt_quant_core.train.losses import LossWeights
from vggt_quant_core.train.trainer import (TrainSettings, _clip, _optimizer, _trained_modules,
                                           sincos_position_embedding, train, training_forward,
                                           whiten_patch_embedding)

WIDTH, HEIGHT = 56, 42


def _tiny_config() -> VGGTConfig:
    dpt = {"dim_in": 64, "features": 16, "out_channels": [8, 16, 32, 32], "intermediate_layer_idx": [0, 1, 0, 1]}
    return VGGTConfig.from_dict({
        "img_size": WIDTH, "embed_dim": 32, "aggregator": {"depth": 2, "num_heads": 2},
        "patch_embed": {"depth": 1, "num_heads": 2},
        "camera_head": {"dim_in": 64, "trunk_depth": 1, "num_heads": 2},
        "depth_head": {**dpt, "output_dim": 2, "activation": "exp"},
        "point_head": {**dpt, "output_dim": 4, "activation": "inv_log"}, "track_head": None})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scene_cache")
    build_scene_cache(directory, CacheSpec(scenes=3, frames=4, width=WIDTH, height=HEIGHT, scenes_per_shard=2))
    return directory


def _window(seed=5, frames=3):
    truth = generate_sequence(seed, frames, WIDTH, HEIGHT).cameras[0]
    return (torch.from_numpy(truth.images).permute(0, 3, 1, 2)[None].float() / 255,
            torch.from_numpy(truth.extrinsics)[None].double(), torch.from_numpy(truth.intrinsics)[None].double(),
            torch.from_numpy(truth.depth)[None].double())


def test_normalised_window_starts_at_the_first_camera_with_unit_mean_distance():
    images, extrinsics, intrinsics, depth = _window()
    target = normalize_window(images, extrinsics, intrinsics, depth)
    assert torch.allclose(target["extrinsics"][0, 0], torch.eye(3, 4, dtype=torch.float64), atol=1e-6)
    valid = target["valid"][0]
    assert valid.equal(depth[0] > 0)
    assert target["world_points"][0][valid].norm(dim=-1).mean().item() == pytest.approx(1.0)
    # the normalised depth and cameras unproject onto the normalised points
    points = unproject_depth_map_to_point_map(target["depth"][0], target["extrinsics"][0], intrinsics[0])
    assert (points[valid] - target["world_points"][0][valid]).abs().max().item() < 1e-9


def test_normalisation_forgets_the_world_frame_and_scale():
    images, extrinsics, intrinsics, depth = _window()
    angle, scale, shift = 0.7, 3.5, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    rotation = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
                            dtype=torch.float64)
    # the same cameras in a world moved by x' = scale * rotation x + shift
    moved = extrinsics.clone()
    moved[..., :3] = extrinsics[..., :3] @ rotation.T
    moved[..., 3] = scale * extrinsics[..., 3] - moved[..., :3] @ shift
    original = normalize_window(images, extrinsics, intrinsics, depth)
    again = normalize_window(images, moved, intrinsics, depth * scale)
    for key in ("extrinsics", "depth", "world_points"):
        assert torch.allclose(again[key], original[key], atol=1e-6), key
    assert again["scale"].item() == pytest.approx(scale * original["scale"].item())


def test_cache_holds_the_rendered_scenes_and_refuses_other_settings(cache_dir):
    cache = load_scene_cache(cache_dir)
    assert cache["images"].shape == (3, 4, HEIGHT, WIDTH, 3) and list(cache["seeds"]) == [0, 1, 2]
    truth = generate_sequence(2, 4, WIDTH, HEIGHT, textures="rich").cameras[0]
    assert np.array_equal(cache["images"][2], truth.images)
    np.testing.assert_allclose(cache["depth"][2], truth.depth, rtol=1e-3)  # stored as float16
    with pytest.raises(ValueError, match="other settings"):
        build_scene_cache(cache_dir, CacheSpec(scenes=4, frames=4, width=WIDTH, height=HEIGHT, scenes_per_shard=2))
    with pytest.raises(ValueError, match="seeds below"):
        CacheSpec(first_seed=999_999, scenes=2)


def test_windows_depend_only_on_seed_and_step():
    sampler = WindowSampler(batch=3, min_frames=2, max_frames=4, strides=(1, 2), seed=7)
    for step in range(50):
        windows = sampler.indices(step, scenes=10, frames=6)
        assert all(np.array_equal(a, b) for a, b in zip(windows, sampler.indices(step, 10, 6)))
        assert len({len(w) for w in windows}) == 1 and 3 <= len(windows[0]) <= 5  # scene + 2..4 frames
        for window in windows:
            steps = np.abs(np.diff(window[1:]))
            assert len(set(steps)) == 1 and steps[0] in (1, 2) and window[1:].max() < 6
    assert any(not np.array_equal(a, b) for a, b in zip(sampler.indices(0, 10, 6), sampler.indices(1, 10, 6)))


def test_subset_windows_span_the_whole_sequence_in_either_order_and_grow_with_a_curriculum():
    sampler = WindowSampler(batch=4, min_frames=2, max_frames=10, seed=3, sampling="subset")
    counts, spans, orders = [], [], set()
    for step in range(300):
        windows = sampler.indices(step, scenes=5, frames=20)
        assert all(np.array_equal(a, b) for a, b in zip(windows, sampler.indices(step, 5, 20)))
        for window in windows:
            frames = window[1:]
            steps = np.diff(frames)
            assert len(set(frames)) == len(frames) and 0 <= frames.min() and frames.max() < 20
            assert (steps > 0).all() or (steps < 0).all()
            orders.add(bool(steps[0] > 0))
            counts.append(len(frames))
            spans.append(abs(int(frames[-1]) - int(frames[0])))
    counts = np.array(counts)
    assert counts.min() == 2 and counts.max() == 10 and np.mean(counts >= 8) > 0.25  # a real share of long windows
    assert orders == {True, False} and max(spans) == 19 and np.mean(np.array(spans) >= 10) > 0.4
    # The curriculum keeps early windows short and reaches the whole sequence at its end.
    curriculum = WindowSampler(batch=4, min_frames=2, max_frames=4, seed=3, sampling="subset",
                               curriculum_steps=100, curriculum_start=0.25)
    early = [abs(w[-1] - w[1]) for step in range(10) for w in curriculum.indices(step, 5, 20)]
    late = [abs(w[-1] - w[1]) for step in range(100, 200) for w in curriculum.indices(step, 5, 20)]
    assert max(early) < 6 and max(late) == 19
    with pytest.raises(ValueError, match="sampling must be one of"):
        WindowSampler(sampling="random")
    with pytest.raises(ValueError, match="up to 10 frames do not fit in the cached 6"):
        sampler.indices(0, 5, 6)


def test_batch_is_normalised_per_window(cache_dir):
    cache = load_scene_cache(cache_dir)
    batch = window_batch(cache, [np.array([0, 3, 2, 1]), np.array([2, 0, 1, 2])])
    assert batch["images"].shape == (2, 3, 3, HEIGHT, WIDTH) and batch["images"].max() <= 1
    for index in range(2):
        valid = batch["valid"][index]
        assert batch["world_points"][index][valid].norm(dim=-1).mean().item() == pytest.approx(1.0, abs=1e-4)


def _train(cache_dir, out, steps, log_fn=lambda message: None, resume=False, weights=LossWeights(), **settings):
    torch.manual_seed(0)
    model = VGGT(_tiny_config())
    settings = TrainSettings(steps=steps, lr=2e-3, warmup_steps=2, log_every=1, checkpoint_every=3,
                             validate_every=1000, validation_scenes=1, validation_frames=2, **settings)
    sampler = WindowSampler(batch=1, min_frames=2, max_frames=3, seed=0)
    record = train(model, load_scene_cache(cache_dir), out, settings, sampler, weights, resume=resume,
                   log_fn=log_fn)
    return model, record


def test_training_lowers_the_loss_and_writes_a_loadable_model(cache_dir, tmp_path):
    model, record = _train(cache_dir, tmp_path / "run", steps=30)
    losses = [entry["loss"] for entry in record["history"]]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert record["finished"] and record["validation"][-1]["step"] == 30
    loaded = load_vggt(tmp_path / "run" / "model.safetensors")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    saved = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert saved["history"] == record["history"] and saved["elapsed"]["cpu_s"] > 0


def test_interrupted_training_resumes_to_the_same_weights(cache_dir, tmp_path):
    uninterrupted, _ = _train(cache_dir, tmp_path / "a", steps=8)

    def interrupt(message):
        if "step 5/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(cache_dir, tmp_path / "b", steps=8, log_fn=interrupt)
    with pytest.raises(ValueError, match="exists"):
        _train(cache_dir, tmp_path / "b", steps=8)
    resumed, record = _train(cache_dir, tmp_path / "b", steps=8, resume=True)
    assert [s["start_step"] for s in record["sessions"]] == [0, 3]  # the checkpoint of step 3
    assert [e["step"] for e in record["history"]] == list(range(1, 9))
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()))
    with pytest.raises(ValueError, match="other settings"):
        _train(cache_dir, tmp_path / "b", steps=9, resume=True)


def test_interrupted_training_with_the_correspondence_probe_resumes_to_the_same_weights(cache_dir, tmp_path):
    levers = dict(weights=LossWeights(depth=0.0, point=0.0, flow=1.0, attention=1.0, correspondence_block=1,
                                      attention_all_keys=True, pair=1.0, camera_points=1.0, camera_points_block=0,
                                      frame0_points=1.0, frame0_points_block=1),
                  patch_init="whitened", pos_embed_init="sincos", clip_per_module=True, camera_lr_scale=0.5)
    uninterrupted, record = _train(cache_dir, tmp_path / "a", steps=6, **levers)
    assert {"flow", "attention", "pair_rotation", "pair_translation", "camera_points", "frame0_points",
            "grad_norm_aggregator", "grad_norm_correspondence_probe"} <= set(record["history"][-1])
    assert "depth" not in record["history"][-1]  # camera-only: the dense heads did not run

    def interrupt(message):
        if "step 4/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(cache_dir, tmp_path / "b", steps=6, log_fn=interrupt, **levers)
    resumed, _ = _train(cache_dir, tmp_path / "b", steps=6, resume=True, **levers)
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()))
    with pytest.raises(ValueError, match="other settings, sampler, losses"):
        _train(cache_dir, tmp_path / "b", steps=6, resume=True, **{**levers, "weights": LossWeights()})


def test_whitened_patch_embedding_decorrelates_training_patches(cache_dir):
    model = VGGT(_tiny_config())
    images = load_scene_cache(cache_dir)["images"]
    whiten_patch_embedding(model, images, seed=3)
    projection = model.aggregator.patch_embed.patch_embed.proj
    frames = torch.from_numpy(images.reshape(-1, HEIGHT, WIDTH, 3)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tokens = projection((frames - mean) / std).flatten(2).transpose(1, 2).reshape(-1, projection.out_channels)
    covariance = torch.cov(tokens.T.double())
    # Whitened on random crops, measured on the patch grid: unit variance and little correlation.
    assert covariance.diagonal().mean().item() == pytest.approx(1.0, abs=0.25)
    off_diagonal = covariance - torch.diag(covariance.diagonal())
    assert off_diagonal.abs().mean() < 0.1 and tokens.mean(0).abs().mean() < 0.25


def test_sincos_positions_are_unit_variance_and_tell_every_patch_apart():
    model = VGGT(_tiny_config())
    sincos_position_embedding(model)
    table = model.aggregator.patch_embed.pos_embed[0, 1:]                   # [side*side, C]
    assert table.pow(2).mean().item() == pytest.approx(1.0, abs=0.05)
    distances = torch.cdist(table, table) + torch.eye(len(table)) * 1e3
    assert distances.min() > 0.5
    assert model.aggregator.patch_embed.pos_embed[0, 0].abs().max() == 0   # the class token has none


def test_per_module_clipping_and_the_camera_learning_rate():
    model = VGGT(_tiny_config())
    settings = TrainSettings(clip_per_module=True, grad_clip=0.5, camera_lr_scale=0.25)
    modules = _trained_modules(model, None)
    images = torch.rand(1, 2, 3, HEIGHT, WIDTH)
    output = model(images)
    (output["pose_enc"].sum() * 100 + output["depth"].sum() * 100 + output["world_points"].sum()).backward()
    norms = _clip(modules, settings)
    assert set(norms) == {f"grad_norm_{name}" for name in ("aggregator", "camera_head", "point_head", "depth_head")}
    for name, module in modules.items():
        after = torch.norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
        assert after <= 0.5 + 1e-4 and norms[f"grad_norm_{name}"] > 0.5, name
    scales = {id(p): g["lr_scale"] for g in _optimizer(modules, settings).param_groups for p in g["params"]}
    assert all(scales[id(p)] == 0.25 for p in model.camera_head.parameters())
    assert all(scales[id(p)] == 1.0 for p in model.aggregator.parameters())


def test_camera_only_forward_gives_the_full_models_poses():
    model = VGGT(_tiny_config()).eval()
    images = torch.rand(1, 3, 3, HEIGHT, WIDTH)
    full, camera_only = model(images), training_forward(model, images, dense=False)
    assert set(camera_only) == {"pose_enc", "pose_enc_list"}
    assert torch.allclose(camera_only["pose_enc"], full["pose_enc"], atol=1e-6)
