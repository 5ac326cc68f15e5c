"""Loading must not hold two copies of the weights (measured in a fresh process)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from vggt_quant_core.model import VGGT, VGGTConfig

# A mid-size model (about 70M parameters) so that the weights dominate the process' own memory.
_CONFIG = {
    "img_size": 56, "embed_dim": 384,
    "aggregator": {"depth": 12, "num_heads": 6},
    "patch_embed": {"depth": 12, "num_heads": 6},
    "camera_head": {"dim_in": 768, "trunk_depth": 2, "num_heads": 6},
    "depth_head": {"dim_in": 768, "features": 32, "out_channels": [16, 32, 64, 64],
                   "intermediate_layer_idx": [2, 5, 8, 11], "output_dim": 2, "activation": "exp"},
    "point_head": None, "track_head": None,
}

# Polls anonymous resident memory (what cannot be dropped; memory-mapped file pages can) while loading.
_MEASURE = textwrap.dedent("""
    import json, sys, threading, time
    import torch
    from vggt_quant_core.model import VGGTConfig, load_vggt

    def rss_anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    path, dtype, config = sys.argv[1], getattr(torch, sys.argv[2]), VGGTConfig.from_dict(json.loads(sys.argv[3]))
    baseline = rss_anon()
    peak, done = [baseline], threading.Event()

    def poll():
        while not done.is_set():
            peak.append(rss_anon())
            time.sleep(0.001)

    thread = threading.Thread(target=poll)
    thread.start()
    model = load_vggt(path, config=config, dtype=dtype)
    done.set()
    thread.join()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"peak_over_baseline": max(peak) - baseline, "model_bytes": weights}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("suffix,dtype", [("pt", "float32"), ("pt", "bfloat16"), ("safetensors", "float16")])
def test_peak_memory_is_one_model_not_two(tmp_path, suffix, dtype):
    config = VGGTConfig.from_dict(_CONFIG)
    model = VGGT(config)
    state = model.state_dict()
    file_bytes = sum(v.numel() * 4 for v in state.values())
    assert file_bytes > 250e6
    path = tmp_path / f"model.{suffix}"
    if suffix == "pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    del model, state
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(path), dtype, json.dumps(_CONFIG)],
                            capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout)
    # A naive load (random-init model + full state dict + cast) holds >= 2x the file in anonymous
    # memory; ours holds the final model plus at most one tensor in flight.
    assert measured["peak_over_baseline"] <= 1.1 * measured["model_bytes"] + 32e6, measured
    assert measured["peak_over_baseline"] < 0.75 * file_bytes, measured
