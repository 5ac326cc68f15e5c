"""Packaging: a ROS 2 ament_python package that colcon builds and pip installs."""

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = "vggt_quant_ros"


def test_package_xml_is_format_3_ament_python_and_matches_setup_py():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == PACKAGE
    assert root.find("export/build_type").text == "ament_python"
    setup_py = (REPO / "setup.py").read_text()
    assert f'version="{root.findtext("version")}"' in setup_py
    depends = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs"} <= depends
    assert (REPO / "resource" / PACKAGE).is_file()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):]
    assert "make demo" in quick_start and "make test" in quick_start


def test_core_is_installed_with_the_vggt_quant_console_script():
    script = Path(sys.executable).parent / "vggt-quant"
    assert script.exists(), "pip install -e . should put vggt-quant next to the interpreter"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "infer" in result.stdout


@pytest.mark.skipif(shutil.which("colcon", path=str(Path(sys.executable).parent)) is None
                    and shutil.which("colcon") is None, reason="colcon not installed")
def test_colcon_build_installs_the_ament_package(tmp_path):
    source = tmp_path / "src" / PACKAGE
    ignore = shutil.ignore_patterns(".venv", ".git", "outputs", "build", "install", "log", "__pycache__",
                                    "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO, source, ignore=ignore)
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    install = tmp_path / "install" / PACKAGE
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).exists()
    assert (install / "share" / PACKAGE / "package.xml").exists()
    assert (install / "lib" / PACKAGE / "vggt-quant").exists()  # where `ros2 run` looks
    assert (install / "lib" / PACKAGE / "reconstruct").exists()
    assert (install / "lib" / PACKAGE / "calibrate").exists()
    share = install / "share" / PACKAGE
    assert [(share / f).exists() for f in ("launch/reconstruct.launch.py", "config/reconstruct.yaml",
                                           "rviz/vggt_quant_ros.rviz")] == [True] * 3
    site = next(install.glob("lib/python*/site-packages"))
    assert (site / "vggt_quant_core" / "model" / "vggt.py").exists()
    assert (site / "vggt_quant_core" / "weights" / "vggt-tiny-synth.safetensors").is_file()  # the default model
    assert re.search(r"Summary: 1 package finished", result.stdout + result.stderr)
