"""A random-weight VGGT with the activation outliers of the trained VGGT-1B (the ``vggt-outlier`` preset).

Random weights give near-Gaussian activations, on which every quantizer looks fine. The QuantVGGT paper
reports for VGGT-1B (i) data-independent camera/register tokens carrying a few massive channels and
(ii) heavy-tailed activations with persistent outlier channels. ``inject_outliers`` reproduces both on
a seeded random model, deterministically:

1. massive special tokens: ``massive_channels`` channels of the camera and register tokens (both slots)
   are set to +-``token_magnitude`` (the other channels keep their N(0, 1e-6) init, so these tokens are
   dominated by the massive channels all the way through the residual stream);
2. outlier channels in every aggregator block: the same ``outlier_fraction`` of the embedding channels
   get their ``norm1``/``norm2`` LayerNorm weight and bias multiplied by ``channel_gain`` (so every token
   entering ``attn.qkv`` and ``mlp.fc1`` has a few large channels, as in trained transformers);
3. heavy-tailed hidden units: for ``outlier_fraction`` of the MLP hidden units, the ``mlp.fc1`` rows and
   biases are multiplied by ``channel_gain`` / 2 (large GELU outputs entering ``mlp.fc2``), and for the
   same fraction of the attention value channels the v rows of ``attn.qkv`` are multiplied likewise
   (outlier channels entering ``attn.proj``);
4. all aggregator Linear weights are redrawn from a Student-t distribution (4 degrees of freedom), scaled
   to the original standard deviation (heavy-tailed weights);
5. LayerScale gammas are redrawn from U(``layerscale_low``, ``layerscale_high``): the 0.01 initialisation
   would make every block a near no-op, so that quantizing the blocks could not change the outputs
   (the trained VGGT-1B has gammas of this order).
"""

import torch

from .model import VGGT


@torch.no_grad()
def inject_outliers(model: VGGT, seed: int = 0, massive_channels: int = 4, token_magnitude: float = 50.0,
                    outlier_fraction: float = 0.03, channel_gain: float = 20.0, layerscale_low: float = 0.1,
                    layerscale_high: float = 0.5) -> VGGT:
    """Modify ``model``'s weights in place as described in the module docstring; returns it."""
    generator = torch.Generator().manual_seed(seed)
    aggregator = model.aggregator
    dim = aggregator.camera_token.shape[-1]

    def pick(count, n):
        return torch.randperm(n, generator=generator)[:max(1, count)]

    def signs(count):
        return torch.randint(0, 2, (count,), generator=generator).float() * 2 - 1

    massive = pick(massive_channels, dim)
    for token in (aggregator.camera_token, aggregator.register_token):
        token[..., massive] = token_magnitude * signs(len(massive))
    channels = pick(int(outlier_fraction * dim), dim)
    for blocks in (aggregator.frame_blocks, aggregator.global_blocks):
        for block in blocks:
            for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
                std = linear.weight.std()
                draw = _student_t(linear.weight.shape, generator)
                linear.weight.copy_(draw / draw.std() * std)
            for scale in (block.ls1, block.ls2):
                scale.gamma.copy_(torch.empty_like(scale.gamma).uniform_(layerscale_low, layerscale_high,
                                                                         generator=generator))
            for norm in (block.norm1, block.norm2):
                norm.weight[channels] *= channel_gain
                norm.bias[channels] *= channel_gain
            hidden = block.mlp.fc1.out_features
            units = pick(int(outlier_fraction * hidden), hidden)
            block.mlp.fc1.weight[units] *= channel_gain / 2
            block.mlp.fc1.bias[units] *= channel_gain / 2
            value_rows = 2 * dim + pick(int(outlier_fraction * dim), dim)
            block.attn.qkv.weight[value_rows] *= channel_gain / 2
            block.attn.qkv.bias[value_rows] *= channel_gain / 2
    return model


def _student_t(shape, generator: torch.Generator, dof: float = 4.0) -> torch.Tensor:
    """Student-t samples from a seeded generator: N(0, 1) / sqrt(chi2(dof) / dof)."""
    normal = torch.randn(shape, generator=generator)
    chi2 = torch.randn((*shape, int(dof)), generator=generator).square().sum(-1)
    return normal / (chi2 / dof).sqrt()
