"""Our VGGT against outputs of the official implementation (shared/fixtures/vggt_golden)."""

import pytest
import torch

from helpers import load_pt, rel_to_max
from vggt_quant_core.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
from vggt_quant_core.model import VGGT, load_vggt

TOL = 1e-4  # max|ours - ref| <= TOL * max|ref| per tensor (fixture README)
TRACK_CONF_TOL = 2e-3
MAIN_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


@pytest.fixture(scope="module", params=["tiny_a", "tiny_b"])
def case(request, golden_dir):
    directory = golden_dir / request.param
    model = load_vggt(directory)  # config.json + state_dict.safetensors, strict
    inputs = load_pt(directory / "inputs.pt")
    with torch.no_grad():
        outputs = model(inputs["images"])
        outputs_track = model(inputs["images"], query_points=inputs["query_points"])
    return {"dir": directory, "model": model, "inputs": inputs, "out": outputs, "out_track": outputs_track}


def test_main_outputs_match_official(case):
    reference = load_pt(case["dir"] / "outputs.pt")
    for key in MAIN_KEYS:
        assert case["out"][key].shape == reference[key].shape, key
        assert rel_to_max(case["out"][key], reference[key]) <= TOL, key
    assert len(case["out"]["pose_enc_list"]) == len(reference["pose_enc_list"]) == 4
    for ours, ref in zip(case["out"]["pose_enc_list"], reference["pose_enc_list"]):
        assert rel_to_max(ours, ref) <= TOL
    assert torch.equal(case["out"]["images"], reference["images"])
    assert set(case["out"]) == set(reference)


def test_track_outputs_match_official(case):
    reference = load_pt(case["dir"] / "outputs_track.pt")
    assert rel_to_max(case["out_track"]["track"], reference["track"]) <= TOL
    assert rel_to_max(case["out_track"]["vis"], reference["vis"]) <= TOL
    assert rel_to_max(case["out_track"]["conf"], reference["conf"]) <= TRACK_CONF_TOL
    for key in MAIN_KEYS:  # the track call does not change the other outputs
        assert torch.equal(case["out_track"][key], case["out"][key])


def test_cameras_and_unprojection_match_official(case):
    reference = load_pt(case["dir"] / "extri_intri.pt")
    images = case["inputs"]["images"]
    extrinsic, intrinsic = pose_encoding_to_extri_intri(case["out"]["pose_enc"], images.shape[-2:])
    assert rel_to_max(extrinsic, reference["extrinsic"]) <= TOL
    assert rel_to_max(intrinsic, reference["intrinsic"]) <= TOL
    points = unproject_depth_map_to_point_map(case["out"]["depth"][0], extrinsic[0], intrinsic[0])
    assert rel_to_max(points, reference["world_points_from_depth"]) <= TOL


def test_intermediates_match_official(case):
    reference = load_pt(case["dir"] / "intermediates.pt")
    model, images = case["model"], case["inputs"]["images"]
    with torch.no_grad():
        tokens, patch_start_idx = model.aggregator(images[None])
        dino = model.aggregator.patch_embed
        features = dino.forward_features(reference["normalized_images"])
        pos = dino.interpolate_pos_encoding(*images.shape[-2:])
    assert patch_start_idx == reference["patch_start_idx"] == 5
    assert len(tokens) == len(reference["aggregated_tokens_list"])
    for ours, ref in zip(tokens, reference["aggregated_tokens_list"]):
        assert rel_to_max(ours, ref) <= TOL
    assert rel_to_max(features["x_prenorm"], reference["dino_x_prenorm"]) <= TOL
    assert rel_to_max(features["x_norm_patchtokens"], reference["dino_x_norm_patchtokens"]) <= TOL
    assert rel_to_max(pos, reference["dino_pos_embed_interp"]) <= TOL


def test_batched_input_gives_the_same_outputs(case):
    with torch.no_grad():
        batched = case["model"](case["inputs"]["images"][None])
    for key in MAIN_KEYS:
        assert torch.allclose(batched[key], case["out"][key], rtol=0, atol=1e-6 * case["out"][key].abs().max())


def test_lean_aggregator_keeps_only_the_layers_heads_read(case):
    model, images = case["model"], case["inputs"]["images"][None]
    kept = model.layers_read_by_heads(with_tracks=False)
    with torch.no_grad():
        tokens, _ = model.aggregator(images, keep_layers=kept)
    depth = model.aggregator.depth
    assert kept == {depth - 1} | {i % depth for i in model.depth_head.config.intermediate_layer_idx}
    assert [i for i, t in enumerate(tokens) if t is not None] == sorted(kept)


def test_frames_chunking_changes_nothing_beyond_float_noise(case):
    """DPT heads process frames in chunks; chunk size 1 must agree with one chunk."""
    model, images = case["model"], case["inputs"]["images"][None]
    with torch.no_grad():
        tokens, start = model.aggregator(images)
        whole = model.depth_head(tokens, images, start, frames_chunk_size=8)
        single = model.depth_head(tokens, images, start, frames_chunk_size=1)
    assert rel_to_max(single[0], whole[0]) <= 1e-5
    assert rel_to_max(single[1], whole[1]) <= 1e-5


def test_from_config_builds_the_fixture_architecture(case):
    import json

    config = json.loads((case["dir"] / "config.json").read_text())
    model = VGGT.from_config(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in case["model"].state_dict().items()}
    assert ours == stored
