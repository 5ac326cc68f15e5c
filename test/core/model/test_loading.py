"""Checkpoint loading: strict matching, clear errors, dtype handling, atomic saving."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import SHARED, load_pt
from vggt_quant_core.model import CheckpointError, VGGT, VGGTConfig, load_vggt, save_vggt
from vggt_quant_core.model.loading import low_precision_parameter_names


@pytest.fixture(scope="module")
def tiny(golden_dir):
    directory = golden_dir / "tiny_a"
    config = VGGTConfig.from_dict(json.loads((directory / "config.json").read_text()))
    state = load_file(str(directory / "state_dict.safetensors"))
    images = load_pt(directory / "inputs.pt")["images"]
    return config, state, images


def _run(model, images):
    with torch.no_grad():
        return model(images)


def test_vggt_1b_on_meta_matches_official_key_list():
    with torch.device("meta"):
        model = VGGT()
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    lines = (SHARED / "fixtures" / "vggt1b_state_dict_keys.txt").read_text().split("\n")
    reference = []
    for line in filter(None, lines):
        key, shape = line.split(" ", 1)
        reference.append((key, [int(d) for d in shape.strip("[]").split(",") if d]))
    assert ours == reference  # same keys, same shapes, same order (incl. "virual_tracks")
    assert sum(p.numel() for p in model.parameters()) == 1_256_537_516


def test_official_style_model_pt_loads_strictly(tiny, tmp_path):
    config, state, images = tiny
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    model = load_vggt(tmp_path)  # directory: config.json + model.pt (torch.load mmap, weights_only)
    reference = load_vggt(SHARED / "fixtures" / "vggt_golden" / "tiny_a")
    assert torch.equal(_run(model, images)["depth"], _run(reference, images)["depth"])
    assert not model.training


def test_wrapped_state_dict_is_accepted(tiny, tmp_path):
    config, state, _ = tiny
    torch.save({"model": state}, tmp_path / "wrapped.pt")
    load_vggt(tmp_path / "wrapped.pt", config=config)


@pytest.mark.parametrize("damage,needle", [
    (lambda s: s.pop("aggregator.camera_token"), "1 missing keys: aggregator.camera_token"),
    (lambda s: s.update(extra_weight=torch.zeros(1)), "1 unexpected keys: extra_weight"),
    (lambda s: s.update({"camera_head.embed_pose.bias": torch.zeros(3)}),
     "camera_head.embed_pose.bias [3] vs model [128]"),
])
def test_mismatches_are_named(tiny, tmp_path, damage, needle):
    config, state, _ = tiny
    state = dict(state)
    damage(state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as error:
        load_vggt(path, config=config)
    assert needle in str(error.value) and str(path) in str(error.value)


def test_long_key_lists_are_abbreviated(tiny, tmp_path):
    config, state, _ = tiny
    path = tmp_path / "aggregator_only.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("aggregator.")}, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys: camera_head\..*\(\+\d+ more\)"):
        load_vggt(path, config=config)


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_truncated_and_garbage_files_raise_clear_errors(tiny, tmp_path, suffix):
    config, state, _ = tiny
    good = tmp_path / f"good.{suffix}"
    torch.save(state, good) if suffix == "pt" else save_file(state, str(good))
    data = good.read_bytes()
    for name, content in [("truncated", data[: len(data) // 2]), ("garbage", b"\x00garbage" * 100),
                          ("empty", b"")]:
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=str(path)):
            load_vggt(path, config=config)


class _Payload:
    """Unpickling this would create ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_refused_not_executed(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_vggt(path)
    assert not marker.exists()


def test_missing_path_and_ambiguous_directory(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no such file"):
        load_vggt(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no weights file"):
        load_vggt(tmp_path)
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / name))
    with pytest.raises(CheckpointError, match="several weight files"):
        load_vggt(tmp_path)


def test_heads_subset_skips_weights_and_keeps_outputs(tiny, golden_dir):
    _, _, images = tiny
    full = load_vggt(golden_dir / "tiny_a")
    lean = load_vggt(golden_dir / "tiny_a", heads=("camera", "depth"))
    assert lean.point_head is None and lean.track_head is None
    out_full, out_lean = _run(full, images), _run(lean, images)
    assert set(out_lean) == {"pose_enc", "pose_enc_list", "depth", "depth_conf", "images"}
    assert torch.equal(out_lean["depth"], out_full["depth"])
    assert torch.equal(out_lean["pose_enc"], out_full["pose_enc"])
    with pytest.raises(CheckpointError, match="wings"):
        load_vggt(golden_dir / "tiny_a", heads=("camera", "wings"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_storage_equals_autocast_of_float32(tiny, golden_dir, dtype):
    """Storing the aggregator matmul weights in bf16/fp16 changes nothing under autocast: autocast
    would round them the same way. Norms, LayerScale, tokens and heads stay float32."""
    _, _, images = tiny
    fp32 = load_vggt(golden_dir / "tiny_a")
    low = load_vggt(golden_dir / "tiny_a", dtype=dtype)
    names = low_precision_parameter_names(low)
    for name, param in low.named_parameters():
        assert param.dtype == (dtype if name in names else torch.float32), name
    assert "aggregator.frame_blocks.0.attn.qkv.weight" in names
    assert "aggregator.frame_blocks.0.norm1.weight" not in names
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        a, b = fp32(images), low(images)
    for key in ("pose_enc", "depth", "world_points"):
        assert a[key].dtype == torch.float32  # heads run in float32
        assert torch.equal(a[key], b[key]), key


def test_save_vggt_round_trip_and_atomicity(tiny, golden_dir, tmp_path, monkeypatch):
    _, _, images = tiny
    model = load_vggt(golden_dir / "tiny_a")
    path = tmp_path / "ckpt.safetensors"
    save_vggt(model, path)
    reloaded = load_vggt(path)  # architecture comes from the file's metadata
    assert reloaded.config == model.config
    assert torch.equal(_run(reloaded, images)["depth"], _run(model, images)["depth"])

    before = path.read_bytes()
    import vggt_quant_core.model.loading as loading

    def crash(state, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_vggt(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_hub_style_config_selects_vggt_1b_heads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"img_size": 518, "enable_track": False}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_vggt(tmp_path)
    message = str(error.value)
    assert "1 unexpected keys: x" in message and "missing keys: aggregator.camera_token" in message
    assert "track_head" not in message
    shutil.rmtree(tmp_path)
