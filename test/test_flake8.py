"""Style check of the whole tree (settings in setup.cfg [flake8])."""

import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.linter
def test_flake8():
    result = subprocess.run([sys.executable, "-m", "flake8", "vggt_quant_core", "vggt_quant_ros", "test",
                             "benchmarks", "setup.py"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
