"""``time_breakdown``: regions and op groups of one profiled call, attributed to the right region."""

import torch
import torch.nn.functional as F
from torch import nn

from vggt_quant_core.eval.time_breakdown import GEMM_OPS, SDPA_OPS, time_breakdown


class _Toy(nn.Module):
    """An "encoder" (attention + Linear) feeding a Linear, then attention outside every region."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(32, 32), nn.GELU())
        self.head = nn.Linear(32, 32)

    def forward(self, x):
        x = F.scaled_dot_product_attention(x, x, x)
        x = self.encoder(x)
        x = self.head(x)
        return F.scaled_dot_product_attention(x, x, x)


def test_ops_are_attributed_to_the_innermost_region_and_counted_once():
    toy = _Toy().eval()
    x = torch.randn(2, 4, 64, 32)
    with torch.inference_mode():
        found = time_breakdown(lambda: toy(x), {"encoder": [toy.encoder], "head": [toy.head]},
                               {"gemm": GEMM_OPS, "sdpa": SDPA_OPS})
    assert set(found["ops"]["sdpa"]) == {"outside"}  # both SDPA calls run outside the regions
    assert set(found["ops"]["gemm"]) == {"encoder", "head"}
    regions = found["regions"]
    assert 0 < found["ops"]["gemm"]["encoder"] <= regions["encoder"]
    assert 0 < found["ops"]["gemm"]["head"] <= regions["head"]
    assert regions["encoder"] + regions["head"] + found["ops"]["sdpa"]["outside"] <= found["total_s"]
    assert found["op_children"]["sdpa"] == {"aten::_scaled_dot_product_flash_attention_for_cpu": 2}


def test_a_region_nested_in_itself_is_not_counted_twice_and_hooks_are_removed():
    inner = nn.Linear(512, 512)  # nearly all of the call: counted twice, the region would exceed the total
    outer = nn.Sequential(inner, nn.ReLU())
    x = torch.randn(2048, 512)
    with torch.inference_mode():
        found = time_breakdown(lambda: outer(x), {"all": [outer, inner]}, {"gemm": GEMM_OPS})
    assert found["ops"]["gemm"]["all"] <= found["regions"]["all"] <= found["total_s"]
    assert not outer._forward_pre_hooks and not inner._forward_hooks
