"""Dependency rules between the layers (see docs/architecture.md)."""

import ast
from pathlib import Path

from helpers import REPO

CORE = REPO / "vggt_quant_core"


def _imports(path: Path):
    """Absolute module names imported by a file (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _violations(folder: Path, allowed_project_prefixes, forbidden_roots=()):
    bad = []
    for path in folder.rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            if root in forbidden_roots or root.endswith("_msgs"):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
            if root.startswith("vggt_quant") and not name.startswith(tuple(allowed_project_prefixes)):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


def test_core_never_imports_ros():
    assert _violations(CORE, ["vggt_quant_core"], forbidden_roots=("rclpy", "vggt_quant_ros")) == []


def test_only_data_reads_or_writes_bag_files():
    """``rosbags`` (a pure-Python file format library, no ROS) belongs to data/ only."""
    outside = [p for p in CORE.rglob("*.py") if CORE / "data" not in p.parents
               and any(n.split(".")[0] == "rosbags" for n in _imports(p))]
    assert outside == []


def test_model_imports_only_geometry_and_file_helpers():
    allowed = ["vggt_quant_core.model", "vggt_quant_core.geometry", "vggt_quant_core.fileio"]
    assert _violations(CORE / "model", allowed) == []


def test_geometry_and_data_do_not_import_the_model():
    assert _violations(CORE / "geometry", ["vggt_quant_core.geometry"]) == []
    data_may_use = ["vggt_quant_core.data", "vggt_quant_core.geometry", "vggt_quant_core.fileio"]
    assert _violations(CORE / "data", data_may_use) == []


def test_rule_checker_sees_relative_imports():
    names = set(_imports(CORE / "model" / "vggt.py"))
    assert "vggt_quant_core.model.aggregator" in names


def test_kernels_import_nothing_of_the_project_outside_kernels():
    assert _violations(CORE / "kernels", ["vggt_quant_core.kernels"]) == []


def test_presets_do_not_import_eval():
    """Named models are resolved without the evaluation code (the node's estimator loads presets)."""
    assert [name for name in _imports(CORE / "presets.py") if name.startswith("vggt_quant_core.eval")] == []


def test_the_nodes_parameters_and_thread_helpers_run_without_ros():
    """What the node adds to the streaming library without ROS I/O (and what it imports of the ROS package)
    needs no rclpy."""
    ros_free = {"parameters", "node_threads", "transforms"}
    package = REPO / "vggt_quant_ros"
    bad = []
    for module in ros_free:
        for name in _imports(package / f"{module}.py"):
            parts = name.split(".")
            if parts[0] == "rclpy" or parts[0].endswith("_msgs") or (
                    parts[0] == "vggt_quant_ros" and len(parts) > 1 and parts[1] not in ros_free):
                bad.append(f"vggt_quant_ros/{module}.py imports {name}")
    assert bad == []


def test_only_the_console_script_shells_import_the_command_line():
    """Library code lives outside cli/; the ROS console scripts that reuse its parsers are the exception."""
    shells = {REPO / "vggt_quant_ros" / "calibrate_bags.py"}
    bad = [f"{path.relative_to(REPO)} imports {name}"
           for package in (CORE, REPO / "vggt_quant_ros") for path in package.rglob("*.py")
           if CORE / "cli" not in path.parents and path not in shells
           for name in _imports(path) if name.startswith("vggt_quant_core.cli")]
    assert bad == []
