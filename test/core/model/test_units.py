"""Layer- and head-level helpers against the official functions (units.pt)."""

import torch

from helpers import rel_to_max
from vggt_quant_core.model.aggregator import special_tokens
from vggt_quant_core.model.heads.activations import activate_head, activate_pose
from vggt_quant_core.model.heads.dpt_head import apply_pos_embed, create_uv_grid, interpolate_bilinear
from vggt_quant_core.model.layers import DinoVisionTransformer, RotaryPositionEmbedding2D, grid_positions

TOL = 1e-6


def test_activate_pose_clamps_negative_fov(units):
    case = units["activate_pose"]
    assert (case["input"][..., 7:] < 0).any()
    out = activate_pose(case["input"], **case["kwargs"])
    assert torch.equal(out, case["output"])


def test_activate_head(units):
    for name in ("activate_head_depth", "activate_head_point"):
        case = units[name]
        pts, conf = activate_head(case["input"], case["activation"], case["conf_activation"])
        assert rel_to_max(pts, case["pts"]) <= TOL and rel_to_max(conf, case["conf"]) <= TOL, name


def test_rope2d(units):
    case = units["rope2d"]
    rope = RotaryPositionEmbedding2D(frequency=case["frequency"])
    assert rel_to_max(rope(case["tokens"], case["positions"]), case["output"]) <= TOL


def test_rope_positions_put_special_tokens_at_origin(units):
    positions = units["rope2d"]["positions"]  # 5 specials + a 3x4 grid, as the aggregator builds them
    assert torch.equal(grid_positions(positions.shape[0], 3, 4, 5, torch.device("cpu")), positions)


def test_special_tokens_first_frame_gets_slot_zero(units):
    case = units["slice_expand_and_flatten"]
    first = torch.arange(case["B"] * case["S"]) % case["S"] == 0
    assert torch.equal(special_tokens(case["token"], first), case["output"])


def test_dpt_pos_embed(units):
    case = units["dpt_pos_embed"]
    grid = create_uv_grid(case["patch_w"], case["patch_h"], aspect_ratio=case["W"] / case["H"],
                          dtype=torch.float32)
    assert rel_to_max(grid, case["uv_grid"]) <= TOL
    out = apply_pos_embed(case["x"], case["W"], case["H"], ratio=case["ratio"])
    assert rel_to_max(out, case["x_plus_pos"]) <= TOL
    assert rel_to_max(out - case["x"], case["embed_times_ratio"].permute(2, 0, 1)[None].expand_as(out)) <= 1e-5


def test_dino_pos_embed_interpolation_is_bicubic_antialiased(units):
    case = units["dino_interpolate_pos_encoding"]
    dim = case["pos_embed"].shape[-1]
    dino = DinoVisionTransformer(img_size=case["img_size"], patch_size=case["patch_size"], embed_dim=dim,
                                 depth=0, num_heads=1)
    with torch.no_grad():
        dino.pos_embed.copy_(case["pos_embed"])
        for size, expected in case["outputs"].items():
            height, width = (int(v) for v in size.split("x"))
            assert rel_to_max(dino.interpolate_pos_encoding(height, width), expected) <= TOL, size


def test_bilinear_resize_uses_align_corners(units):
    case = units["custom_interpolate"]
    assert rel_to_max(interpolate_bilinear(case["x"], case["size"]), case["output"]) <= TOL
