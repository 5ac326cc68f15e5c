"""The ``reconstruct`` console script with the shipped parameter file: fatal errors end the process once with
one clear line, a real run publishes, and SIGINT shuts it down cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from helpers_ros import DOMAIN_ID, RosGraph, rgb_image

from sensor_msgs.msg import Image, PointCloud2  # noqa: I100 (helpers_ros skips this module without rclpy)
from vggt_quant_core.data import generate_sequence

CONFIG = str(REPO / "config" / "reconstruct.yaml")
ENV = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
       "PYTHONUNBUFFERED": "1"}


def _command(*ros_args):
    script = shutil.which("reconstruct", path=str(Path(sys.executable).parent))
    assert script, "pip install -e . should put the reconstruct console script next to the interpreter"
    return [script, "--ros-args", "--params-file", CONFIG, *ros_args]


@pytest.mark.parametrize("ros_args, reason", [
    (["-p", "checkpoint:=/nonexistent/model.pt"], "configuration error: checkpoint /nonexistent/model.pt not found"),
    (["-p", "window_size:=1000"], "window_size"),
    (["-p", "window_stride:=8"], "window_stride (8) must be smaller than window_size (8)"),
    (["--params-file", "/nonexistent.yaml"], "configuration error: --params-file: /nonexistent.yaml does not exist"),
])
def test_configuration_errors_exit_once_with_one_line(ros_args, reason):
    result = subprocess.run(_command(*ros_args), env=ENV, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    fatal = [line for line in output.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and reason in fatal[0], output


def test_parameters_the_node_does_not_have_are_named_in_one_warning(tmp_path):
    """An old or misspelt name would otherwise be kept by rcl and read by nobody; the missing checkpoint then
    ends the run quickly."""
    params = tmp_path / "old.yaml"
    params.write_text("/**:\n  ros__parameters:\n    publish_tf: true\n    window_sise: 6\n")
    result = subprocess.run(_command("--params-file", str(params), "-p", "checkpoint:=/nonexistent/model.pt"),
                            env=ENV, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "WARN" in line and str(params) in line]
    assert len(warnings) == 1, output
    assert warnings[0].endswith("sets parameters this node does not have, ignored: publish_tf (replaced by "
                                "tf_mode (cameras, map_odom or none)), window_sise"), output
    assert not any("does not have" in line and CONFIG in line for line in output.splitlines()), output
    assert result.returncode == 1 and "checkpoint /nonexistent/model.pt not found" in output


def test_a_checkpoint_that_cannot_be_read_is_fatal(tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a checkpoint")
    result = subprocess.run(_command("-p", f"checkpoint:={broken}"), env=ENV, capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    fatal = [line for line in output.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and f"cannot load the model: {broken}" in fatal[0], output


def test_the_preset_runs_from_the_parameter_file_and_sigint_stops_it_cleanly():
    sequence = generate_sequence(1, 4, 224, 168).cameras[0]
    process = subprocess.Popen(_command("-p", "image_topics:=['/cli/image']", "-p", "window_size:=2", "-p",
                                        "window_stride:=1"), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    graph = RosGraph()
    try:
        clouds = graph.collect(PointCloud2, "/vggt/points")
        publisher = graph.probe.create_publisher(Image, "/cli/image", 10)
        deadline, step = time.monotonic() + 120, 0
        while not clouds:   # best-effort input: keep sending frames until the first window is out
            assert time.monotonic() < deadline and process.poll() is None, "no cloud from the console script"
            if publisher.get_subscription_count():
                publisher.publish(rgb_image(sequence.images[step % 4], 1_000_000_000 + step * 50_000_000))
                step += 1
            time.sleep(0.3)
        assert clouds[-1].header.frame_id == "map" and clouds[-1].width > 0
    finally:
        graph.close()
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "Traceback" not in output and "model ready: preset vggt-tiny-synth" in output, output
