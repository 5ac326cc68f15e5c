"""What the launch file decides, checked without launch: argument parsing, the parameter file check, the
reason it gives when the node exits. The launch file itself runs in test_launch_files.py where launch_ros is."""

import os
import re

import pytest

from helpers import REPO

from vggt_quant_ros.launch_arguments import (ArgumentError, check_params_file, exit_reason, fatal_message,
                                             node_parameters, parse_bool, parse_image_topics, params_files_of,
                                             unknown_parameters)
from vggt_quant_ros.parameters import PARAMETERS

CONFIG = str(REPO / "config" / "reconstruct.yaml")
DEFAULTS = {"params_file": CONFIG, "checkpoint": "", "preset": "", "image_topics": "", "transport": "", "device": "",
            "rectify": "", "tf_mode": "", "odom_frame": "", "base_frame": "", "map_save_dir": "",
            "namespace": "", "use_sim_time": "false", "rviz": "true"}   # as the launch file declares them


@pytest.mark.parametrize("text, value", [("true", True), ("false", False), ("1", True), ("0", False),
                                         ("True", True), (" FALSE ", False)])
def test_booleans_are_true_false_1_or_0(text, value):
    assert parse_bool("rviz", text) is value


@pytest.mark.parametrize("text", ["maybe", "yes", "", "2"])
def test_other_booleans_are_refused_with_the_argument_and_an_accepted_value(text):
    with pytest.raises(ArgumentError, match=f"rviz:='{text}' is not a boolean; use rviz:=true or rviz:=false"):
        parse_bool("rviz", text)


@pytest.mark.parametrize("text, topics", [
    ("/camera/image_raw", ["/camera/image_raw"]),
    ("['/left/image_raw', '/right/image_raw']", ["/left/image_raw", "/right/image_raw"]),
    ("[/left/image_raw, /right/image_raw]", ["/left/image_raw", "/right/image_raw"]),
])
def test_image_topics_are_one_topic_or_a_yaml_list(text, topics):
    assert parse_image_topics(text) == topics


@pytest.mark.parametrize("text", ["[]", "123", "[", "['/a/image', 5]", "{a: b}", "['']"])
def test_bad_image_topics_name_the_argument_and_show_an_example(text):
    with pytest.raises(ArgumentError) as error:
        parse_image_topics(text)
    message = str(error.value)
    assert message.startswith(f"image_topics:={text!r} is not ")
    assert "use image_topics:=/camera/image_raw or image_topics:=\"['/left/image_raw', '/right/image_raw']\"" in message
    assert "\n" not in message


def test_a_missing_parameter_file_is_refused_naming_the_argument_and_the_file(tmp_path):
    with pytest.raises(ArgumentError, match="^params_file: /nonexistent.yaml does not exist or is not a file$"):
        check_params_file("/nonexistent.yaml")
    with pytest.raises(ArgumentError, match=f"^--params-file: {tmp_path} does not exist or is not a file$"):
        check_params_file(str(tmp_path), argument="--params-file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_parameter_file_is_refused(tmp_path):
    locked = tmp_path / "locked.yaml"
    locked.write_text("/**: {ros__parameters: {}}\n")
    locked.chmod(0)
    with pytest.raises(ArgumentError, match=f"^params_file: {locked} cannot be read"):
        check_params_file(str(locked))


def test_the_shipped_parameter_file_is_accepted():
    assert check_params_file(CONFIG) == CONFIG


DECLARED = [param.name for param in PARAMETERS]


def test_the_shipped_parameter_file_sets_only_declared_parameters():
    assert unknown_parameters(CONFIG, "vggt", DECLARED) == []


def test_unknown_parameters_are_those_the_node_does_not_declare(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    publish_tf: true\n    use_sim_time: true\n"
                      "    qos_overrides: {/tf: {publisher: {depth: 10}}}\n    cloud: {voxel: 0.1}\n"
                      "/vggt:\n  ros__parameters:\n    window_size: 6\n    window_sise: 6\n"
                      "other_node:\n  ros__parameters:\n    anything: 1\n")
    assert unknown_parameters(str(params), "vggt", DECLARED) == [
        "publish_tf (replaced by tf_mode (cameras, map_odom or none))", "cloud.voxel", "window_sise"]


def test_files_safe_yaml_cannot_read_are_left_to_rcl(tmp_path):
    launch_ros_file = tmp_path / "launch_params.yaml"   # what launch_ros writes for list overrides
    launch_ros_file.write_text("/**:\n  ros__parameters:\n    image_topics: !!python/tuple ['/a']\n")
    assert unknown_parameters(str(launch_ros_file), "vggt", DECLARED) == []
    assert unknown_parameters(str(tmp_path / "missing.yaml"), "vggt", DECLARED) == []


def test_params_files_are_found_on_a_ros_command_line():
    command = ["reconstruct", "--ros-args", "--params-file", "a.yaml", "-p", "x:=1", "--params-file", "b.yaml"]
    assert params_files_of(command) == ["a.yaml", "b.yaml"]
    assert params_files_of(["reconstruct", "--params-file"]) == []


def test_default_arguments_keep_the_file_values_and_set_only_use_sim_time():
    assert node_parameters(DEFAULTS) == (CONFIG, {"use_sim_time": False})


def test_given_arguments_override_the_file():
    given = {**DEFAULTS, "checkpoint": "/m.pt", "device": "cuda", "transport": "compressed",
             "image_topics": "['/a/image', '/b/image']", "use_sim_time": "1", "tf_mode": "map_odom",
             "rectify": "off", "map_save_dir": "/data/maps"}
    assert node_parameters(given) == (CONFIG, {"checkpoint": "/m.pt", "device": "cuda", "transport": "compressed",
                                               "image_topics": ["/a/image", "/b/image"], "use_sim_time": True,
                                               "tf_mode": "map_odom", "rectify": "off", "map_save_dir": "/data/maps"})


@pytest.mark.parametrize("argument, value, message", [
    ("params_file", "/nonexistent.yaml", "params_file: /nonexistent.yaml does not exist"),
    ("image_topics", "[]", "image_topics:='[]' is not one topic"),
    ("use_sim_time", "maybe", "use_sim_time:='maybe' is not a boolean"),
])
def test_node_parameters_refuse_each_bad_argument(argument, value, message):
    with pytest.raises(ArgumentError, match=re.escape(message)):
        node_parameters({**DEFAULTS, argument: value})


def test_the_last_fatal_line_of_the_node_is_its_reason():
    coloured = ("\x1b[0m[INFO] [1796.1] [robot1.vggt]: listening\x1b[0m\n"
                "\x1b[31m[FATAL] [1796.2] [robot1.vggt]: configuration error: parameter transport is 'x'\x1b[0m\n")
    assert fatal_message(coloured) == "configuration error: parameter transport is 'x'"
    assert fatal_message("[FATAL] [1.0] [vggt]: first\n[FATAL] [2.0] [vggt]: second\n") == "second"
    assert fatal_message("[WARN] [1.0] [vggt]: cam0: no image received yet\n") is None


def test_the_exit_reason_gives_the_code_and_the_fatal_message():
    assert exit_reason(1, "cannot load the model: x") == ("the reconstruct node exited with code 1: "
                                                          "cannot load the model: x")
    assert exit_reason(0, None) == "the reconstruct node exited with code 0"
