"""Evaluation: output fidelity of quantized models, benchmark model construction."""
