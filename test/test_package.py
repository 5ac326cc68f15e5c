"""Packaging: a ROS 2 ament_python package that colcon builds and pip installs."""

import ast
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


def test_make_install_leaves_the_x86_only_ros_wheels_out_on_arm():
    """The install commands as on aarch64 (Jetson, Graviton), where no ros-* wheels exist (not run on ARM)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    commands = {arch: subprocess.run(["make", "-n", "-B", "install", f"ARCH={arch}"], cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout for arch in ("x86_64", "aarch64")}
    assert '-e ".[dev,ros]"' in commands["x86_64"] and "left out" not in commands["x86_64"]
    assert '-e ".[dev]"' in commands["aarch64"] and "ROS wheels left out" in commands["aarch64"]


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


# import name -> (rosdep key, pip distribution) of every third-party Python module the package needs
PYTHON_DEPENDENCIES = {
    "numpy": ("python3-numpy", "numpy"),
    "PIL": ("python3-pil", "Pillow"),
    "scipy": ("python3-scipy", "scipy"),
    "sklearn": ("python3-sklearn", "scikit-learn"),
    "yaml": ("python3-yaml", "PyYAML"),
    "torch": (None, "torch"),   # no rosdep key: rosdep has no CUDA-matched build, docs/install.md installs it with pip
    "safetensors": (None, "safetensors"),
    "rosbags": (None, "rosbags"),
}
# imported only where importable (guarded imports), so not required; package.xml names each of them
OPTIONAL_IMPORTS = {"cv_bridge", "tf2_ros", "fht_cpu", "fast_hadamard_transform", "triton", "av"}
# ROS packages, whose rosdep key is their import name
ROS_PACKAGES = re.compile(r"^(rclpy|ament_index_python|launch|launch_ros|\w+_msgs|\w+_srvs|\w+_interfaces)$")


def _third_party_imports():
    """Top-level module names imported anywhere by the installed code (both packages and the launch file)."""
    files = [*(REPO / "vggt_quant_core").rglob("*.py"), *(REPO / "vggt_quant_ros").rglob("*.py"),
             *(REPO / "launch").glob("*.py")]
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and not n.startswith("vggt_quant")}


def test_every_import_of_the_package_is_declared_in_package_xml():
    imports = _third_party_imports()
    assert imports - set(PYTHON_DEPENDENCIES) - OPTIONAL_IMPORTS - {n for n in imports if ROS_PACKAGES.match(n)} \
        == set(), "a new import: add it to package.xml, setup.py and docs/install.md, then to PYTHON_DEPENDENCIES here"
    package_xml = (REPO / "package.xml").read_text()
    depends = {e.text for e in ET.parse(REPO / "package.xml").getroot().findall("exec_depend")}
    rosdep_keys = {key for name, (key, _) in PYTHON_DEPENDENCIES.items() if key and name in imports}
    assert rosdep_keys | {n for n in imports if ROS_PACKAGES.match(n)} <= depends
    assert [n for n in OPTIONAL_IMPORTS if n not in package_xml and n.replace("_", "-") not in package_xml] == []


def test_every_python_dependency_is_in_setup_py_and_the_install_lines():
    setup_py = (REPO / "setup.py").read_text()
    missing = [dist for _, dist in PYTHON_DEPENDENCIES.values() if f'"{dist}>=' not in setup_py]
    assert missing == [], "pip install . must install them"
    install = (REPO / "docs" / "install.md").read_text()
    colcon = install[install.index("## colcon"):install.index("## VGGT-1B weights")]
    pip_line = next(line for line in colcon.splitlines() if line.startswith("pip install"))
    assert [dist for key, dist in PYTHON_DEPENDENCIES.values() if key is None and dist not in pip_line] == []
    assert [key for key, _ in PYTHON_DEPENDENCIES.values() if key and key not in colcon] == [], \
        "docs/install.md says which packages rosdep installs"


def test_setup_py_has_no_option_setuptools_does_not_know():
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == PACKAGE
    assert "Unknown distribution option" not in result.stderr
