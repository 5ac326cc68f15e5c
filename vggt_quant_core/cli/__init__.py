"""The ``vggt-quant`` command line (the only code in the core that parses argv)."""
