"""Training VGGT-architecture models on generated scenes: scene cache, GT normalisation, losses, loop."""
