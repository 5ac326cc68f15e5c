"""Where the time of one call goes: module regions and op groups, from one run under ``torch.profiler``.

A *region* is a set of modules (e.g. a model's patch embedding, or all Linear layers of its blocks): forward
pre/post hooks open and close a ``record_function`` range named after the region around each of their
forwards. An *op group* is a set of operator names as the profiler records them (e.g.
``aten::scaled_dot_product_attention``). Each recorded op of a group is attributed to the innermost region
range enclosing it (``None``: outside every region); an op nested inside another op of the same group is
not counted again. On CPU the ops run synchronously (intra-op threads join before an op returns), so the
ranges' durations are wall time. The profiler adds a few microseconds per op: report the profiled run's
total next to an unprofiled timing.
"""

from collections import Counter
from typing import Callable, Dict, Iterable, Optional, Sequence

from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

_REGION_PREFIX = "region:"


def _mark_regions(regions: Dict[str, Sequence[nn.Module]]):
    """Hooks that wrap every forward of the regions' modules in a ``record_function`` range."""
    open_ranges = []
    handles = []

    def enter(label: str):
        def hook(*_):
            context = record_function(_REGION_PREFIX + label)
            context.__enter__()
            open_ranges.append(context)
        return hook

    def leave(*_):
        open_ranges.pop().__exit__(None, None, None)

    for label, modules in regions.items():
        for module in modules:
            handles.append(module.register_forward_pre_hook(enter(label)))
            handles.append(module.register_forward_hook(leave))
    return handles


def _ancestors(event) -> Iterable:
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def _enclosing_region(event) -> Optional[str]:
    for parent in _ancestors(event):
        if parent.name.startswith(_REGION_PREFIX):
            return parent.name[len(_REGION_PREFIX):]
    return None


def time_breakdown(run: Callable[[], object], regions: Dict[str, Sequence[nn.Module]],
                   op_groups: Dict[str, Sequence[str]]) -> dict:
    """Call ``run()`` once under the profiler. Returns ``total_s`` (wall seconds of the call),
    ``regions`` {label: seconds inside that region's forwards}, ``ops`` {group: {enclosing region or
    "outside": seconds}} and ``op_children`` {group: {name of an op the group's ops called directly:
    count}} (which kernel an op dispatched to, e.g. ``aten::_scaled_dot_product_flash_attention_for_cpu``)."""
    handles = _mark_regions(regions)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("time_breakdown:total"):
                run()
    finally:
        for handle in handles:
            handle.remove()
    events = prof.events()
    group_of = {name: group for group, names in op_groups.items() for name in names}
    total = 0.0
    region_s = {label: 0.0 for label in regions}
    op_s: Dict[str, Dict[str, float]] = {group: {} for group in op_groups}
    children: Dict[str, Counter] = {group: Counter() for group in op_groups}
    for event in events:
        seconds = event.time_range.elapsed_us() * 1e-6
        if event.name == "time_breakdown:total":
            total += seconds
        elif event.name.startswith(_REGION_PREFIX):
            region = event.name[len(_REGION_PREFIX):]
            if _enclosing_region(event) != region:  # a region's module inside another of its modules
                region_s[region] += seconds
        elif event.name in group_of:
            group = group_of[event.name]
            if any(group_of.get(parent.name) == group for parent in _ancestors(event)):
                continue
            where = _enclosing_region(event) or "outside"
            op_s[group][where] = op_s[group].get(where, 0.0) + seconds
            children[group].update(child.name for child in event.cpu_children)
    return {"total_s": total, "regions": region_s, "ops": op_s,
            "op_children": {group: dict(counts) for group, counts in children.items()}}


# Operators that are a GEMM (float or low-precision) as the CPU profiler names them; the fused AMX op
# (kernels/amx_int8.py) includes its per-token quantization and its epilogue.
GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::_int_mm", "aten::_scaled_mm",
            "onednn::qlinear_pointwise", "aten::_weight_int8pack_mm", "vggtq::amx_int8_linear")
SDPA_OPS = ("aten::scaled_dot_product_attention",)
