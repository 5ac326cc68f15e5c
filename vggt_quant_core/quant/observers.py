"""Activation statistics of quantized layers' inputs, gathered with forward pre-hooks.

Used for calibration-free initialisation (per-channel max |x| -> smoothing scales, static ranges) and
for reporting outliers (max, kurtosis) before and after the transforms.
"""

import contextlib
from typing import Callable, Dict, Iterator, Mapping, Optional

import torch
from torch import nn


class ActivationStats:
    """Running statistics of activations [..., C]: per-channel max |x| and min, and (with ``moments``)
    the sums needed for the Pearson kurtosis E[(x - mean)^4] / var^2 of all values (3 for a Gaussian)."""

    def __init__(self, moments: bool = True) -> None:
        self.channel_absmax: Optional[torch.Tensor] = None
        self.channel_min: Optional[torch.Tensor] = None
        self.moments = moments
        self.count = 0
        self._sums = torch.zeros(4, dtype=torch.float64)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1])
        absmax = flat.abs().amax(dim=0).float().cpu()
        low = flat.amin(dim=0).float().cpu()
        if self.channel_absmax is None:
            self.channel_absmax, self.channel_min = absmax, low
        else:
            self.channel_absmax = torch.maximum(self.channel_absmax, absmax)
            self.channel_min = torch.minimum(self.channel_min, low)
        self.count += flat.numel()
        if self.moments:
            flat = flat.double()
            self._sums += torch.stack([flat.sum(), (flat ** 2).sum(), (flat ** 3).sum(), (flat ** 4).sum()]).cpu()

    @property
    def absmax(self) -> float:
        return self.channel_absmax.max().item()

    @property
    def kurtosis(self) -> float:
        n = self.count
        m1, m2, m3, m4 = (self._sums / n).tolist()
        variance = m2 - m1 ** 2
        central4 = m4 - 4 * m1 * m3 + 6 * m1 ** 2 * m2 - 3 * m1 ** 4
        return central4 / variance ** 2 if variance > 0 else float("nan")

    def summary(self) -> dict:
        return {"max": self.absmax, "kurtosis": self.kurtosis,
                "top_channel_ratio": (self.channel_absmax.max() / self.channel_absmax.median().clamp(min=1e-12)).item()}


@contextlib.contextmanager
def observe_inputs(layers: Mapping[str, nn.Module], points: Mapping[str, Optional[int]], moments: bool = True,
                   token_groups: Optional[Mapping[str, Callable[[torch.Tensor], torch.Tensor]]] = None
                   ) -> Iterator[Dict[str, Dict[str, ActivationStats]]]:
    """While active, every call of a layer records statistics of its input after the first ``upto``
    transform steps, for each named observation point (0 = raw input, None = fully transformed). Layers are
    ``QuantLinear``s, or any module whose first argument is observed raw (points with ``upto`` 0 only).

    Yields ``stats[layer_name][point_name]``. With ``token_groups`` (group name -> function selecting part
    of an input [..., C], e.g. one kind of token), statistics are kept per group instead, under
    ``stats[layer_name]["<point_name>/<group_name>"]``.
    """
    groups = dict(token_groups) if token_groups else {None: None}

    def key(point, group):
        return point if group is None else f"{point}/{group}"

    stats = {name: {key(point, group): ActivationStats(moments) for point in points for group in groups}
             for name in layers}

    def make_hook(name):
        def hook(module, args):
            for point, upto in points.items():
                x = args[0] if upto == 0 else module.transform(args[0], upto=upto)
                for group, select in groups.items():
                    stats[name][key(point, group)].update(x if select is None else select(x))
        return hook

    handles = [layer.register_forward_pre_hook(make_hook(name)) for name, layer in layers.items()]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
