"""ROS 2 nodes around vggt_quant_core (imports the core; the core never imports this package)."""
