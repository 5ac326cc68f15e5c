"""The arguments ``launch/reconstruct.launch.py`` starts the reconstruct node with, as plain functions.

``launch`` and ``launch_ros`` are not pip-installable, so everything the launch file decides lives here, where
tests run without them: it only reads its arguments, calls these functions and wires the result to launch
actions. The console script ``reconstruct`` checks its ``--params-file`` with the same function, so both ways of
starting the node refuse a bad parameter file with the same message.

Every check raises ``ArgumentError`` with one line that names the argument and shows an accepted value; the
launch file raises it before any process starts, so a bad argument ends the launch without leaving a node behind.
"""

import os
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import yaml

# string parameters of the node that a launch argument of the same name overrides when it is not empty
OVERRIDABLE = ("checkpoint", "preset", "device", "transport", "rectify", "tf_mode", "odom_frame", "base_frame",
               "map_save_dir")


class LaunchArgument(NamedTuple):
    name: str
    default: Optional[str]   # None: the launch file supplies it (the installed parameter file)
    description: str


# What the launch file declares, in ``ros2 launch ... --show-args`` order (docs/ros.md lists the same).
LAUNCH_ARGUMENTS = (
    LaunchArgument("params_file", None, "parameter file of the reconstruct node"),
    LaunchArgument("checkpoint", "", "weights file or directory (full precision or quantized); empty: file's"),
    LaunchArgument("preset", "", "named model (e.g. vggt-1b); empty: file's"),
    LaunchArgument("image_topics", "", "one topic, or a YAML list of topics (one per camera); empty: file's"),
    LaunchArgument("transport", "", "raw or compressed; empty: file's"),
    LaunchArgument("device", "", "auto, cpu, cuda, cuda:1; empty: file's"),
    LaunchArgument("rectify", "", "auto (undistort cameras whose CameraInfo has distortion) or off; empty: file's"),
    LaunchArgument("tf_mode", "", "cameras (map -> optical frames), map_odom (REP 105 map -> odom) or none; "
                   "empty: file's"),
    LaunchArgument("odom_frame", "", "map_odom: odometry frame; empty: file's"),
    LaunchArgument("base_frame", "", "map_odom: body frame; empty: file's"),
    LaunchArgument("map_save_dir", "", "where ~/save_map writes its timestamped folders; empty: file's"),
    LaunchArgument("namespace", "", "namespace of the node and RViz (topics become /<namespace>/vggt/...)"),
    LaunchArgument("use_sim_time", "false", "true/false: follow /clock (e.g. `ros2 bag play --clock`)"),
    LaunchArgument("rviz", "true", "true/false: also start RViz with the shipped view (warns if not installed)"),
)
# what launch's own conditions accept (launch.conditions.evaluate_condition_expression), so `rviz:=True` and
# `use_sim_time:=1` mean what they mean elsewhere in ROS
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")
TOPICS_EXAMPLE = "image_topics:=/camera/image_raw or image_topics:=\"['/left/image_raw', '/right/image_raw']\""
# rcutils colours the node's log lines when launch gives it a terminal (emulate_tty)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_FATAL_LINE = re.compile(r"\[FATAL\] \[[^\]]*\] \[[^\]]*\]: (.*)")


class ArgumentError(ValueError):
    """An argument the node cannot start with; the message names it and shows an accepted value."""


def parse_bool(name: str, text: str) -> bool:
    """``true``/``false`` (or ``1``/``0``, any case) as a bool; anything else is an ``ArgumentError``."""
    word = text.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ArgumentError(f"{name}:={text!r} is not a boolean; use {name}:=true or {name}:=false (or 1/0)")


def parse_image_topics(text: str) -> List[str]:
    """One topic, or a YAML list of topics (one per camera), as the node's ``image_topics`` list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ArgumentError(f"image_topics:={text!r} is not valid YAML ({problem}); use {TOPICS_EXAMPLE}") from None
    topics = [value] if isinstance(value, str) else value
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ArgumentError(f"image_topics:={text!r} is not one topic or a non-empty list of topics; "
                            f"use {TOPICS_EXAMPLE}")
    return topics


def check_params_file(path: str, argument: str = "params_file") -> str:
    """``path`` when it is a readable file, else an error naming ``argument`` and the file: launch_ros would
    skip a missing file with a log line (the node then runs on built-in defaults), rcl would fail in
    ``rclpy.init`` with a traceback. Its YAML is left to rcl, whose parser accepts what launch_ros writes
    (``!!python/tuple`` for list overrides), which ``yaml.safe_load`` refuses."""
    if not os.path.isfile(path):
        raise ArgumentError(f"{argument}: {path} does not exist or is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ArgumentError(f"{argument}: {path} cannot be read ({exc.strerror})") from None
    return path


# parameters that earlier versions of the node had, and what replaced them
REPLACED_PARAMETERS = {"publish_tf": "tf_mode (cameras, map_odom or none)"}
# parameters rcl or rclpy declare on every node
_BUILT_IN_PARAMETER = re.compile(r"^(use_sim_time|start_type_description_service|qos_overrides\..*)$")


def unknown_parameters(path: str, node_name: str, declared: Sequence[str]) -> List[str]:
    """The parameters ``path`` sets for the node (under ``/**``, ``node_name`` or ``/node_name``) that it does
    not declare, each with what replaced it if it was renamed. rcl keeps them as overrides that nobody reads, so
    a misspelt or removed name would otherwise change nothing without a word. A file that ``yaml.safe_load``
    cannot read (launch_ros's own, with Python tags) is rcl's to check: nothing is reported for it."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    sections = [data.get(key) for key in ("/**", node_name, f"/{node_name}")] if isinstance(data, dict) else []
    names: List[str] = []
    for section in sections:
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            names += _flattened_names(section["ros__parameters"])
    known = set(declared)
    unknown = dict.fromkeys(name for name in names if name not in known and not _BUILT_IN_PARAMETER.match(name))
    return [f"{name} (replaced by {REPLACED_PARAMETERS[name]})" if name in REPLACED_PARAMETERS else name
            for name in unknown]


def _flattened_names(parameters: Mapping[str, Any], prefix: str = "") -> List[str]:
    """``{a: {b: 1}}`` sets the parameter ``a.b``, as rcl reads it."""
    names: List[str] = []
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        names += _flattened_names(value, f"{name}.") if isinstance(value, dict) else [name]
    return names


def params_files_of(ros_arguments: Sequence[str]) -> List[str]:
    """The files given with ``--params-file`` on a command line (the node has no arguments of its own, so each
    one is rcl's)."""
    return [ros_arguments[i + 1] for i, token in enumerate(ros_arguments[:-1]) if token == "--params-file"]


def node_parameters(arguments: Mapping[str, str]) -> Tuple[str, Dict[str, Any]]:
    """The node's parameter sources in launch_ros order (later wins): the checked ``params_file``, and the
    overrides from the launch arguments that were given. Empty string arguments keep the file's values;
    ``use_sim_time`` is always set, as in other ROS launch files: bag playback with ``--clock`` needs it on
    every node, and RViz gets the same value."""
    overrides: Dict[str, Any] = {name: arguments[name] for name in OVERRIDABLE if arguments[name]}
    if arguments["image_topics"]:
        overrides["image_topics"] = parse_image_topics(arguments["image_topics"])
    overrides["use_sim_time"] = parse_bool("use_sim_time", arguments["use_sim_time"])
    return check_params_file(arguments["params_file"]), overrides


def fatal_message(output: str) -> Optional[str]:
    """The message of the last ``[FATAL]`` log line in a chunk of the node's output, if there is one."""
    lines = _ANSI_ESCAPE.sub("", output).splitlines()
    messages = [match.group(1).strip() for match in map(_FATAL_LINE.search, lines) if match]
    return messages[-1] if messages else None


def exit_reason(returncode: int, fatal: Optional[str]) -> str:
    """Why the launch ends when the node has exited: its exit code and, when it logged one, its FATAL message."""
    reason = f"the reconstruct node exited with code {returncode}"
    return f"{reason}: {fatal}" if fatal else reason
