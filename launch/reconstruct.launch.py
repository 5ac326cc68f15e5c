"""Start the reconstruct node with its parameter file, and RViz.

    ros2 launch vggt_quant_ros reconstruct.launch.py image_topics:="['/cam0/image_raw', '/cam1/image_raw']" \
        checkpoint:=/path/to/model.pt rviz:=true
    ros2 launch vggt_quant_ros reconstruct.launch.py image_topics:=/front/image_raw tf_mode:=map_odom \
        map_save_dir:=/data/maps

Arguments left empty keep the values of ``params_file``. Checking and parsing the arguments is
``vggt_quant_ros.launch_arguments``; this file only wires it to launch actions. Without the ros2 CLI (pip install),
the same node and file: ``reconstruct --ros-args --params-file config/reconstruct.yaml`` (docs/ros.md).
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.logging import get_logger
from launch_ros.actions import Node

from vggt_quant_ros.launch_arguments import (LAUNCH_ARGUMENTS, exit_reason, fatal_message, node_parameters,
                                             parse_bool)

PACKAGE = "vggt_quant_ros"


def _rviz_installed():
    try:
        get_package_prefix("rviz2")
        return True
    except PackageNotFoundError:
        return False


def _reconstruct(context):
    """The node, its exit handling and RViz. Every argument is checked first: a bad one raises here, before
    any process starts, and launch ends with that one line and exit code 1."""
    arguments = dict(context.launch_configurations)   # every declared argument, as given or defaulted
    params_file, overrides = node_parameters(arguments)
    start_rviz = parse_bool("rviz", arguments["rviz"])
    namespace = arguments["namespace"]
    node = Node(package=PACKAGE, executable="reconstruct", name="vggt", namespace=namespace,
                parameters=[params_file, overrides], output="screen", emulate_tty=True)
    fatal = []   # the node's last FATAL message: the reason the launch gives when the node exits

    def remember_fatal(event):
        message = fatal_message(event.text.decode(errors="replace"))
        if message:
            fatal[:] = [message]

    def end_launch(event, context):
        if context.is_shutdown:   # Ctrl-C: the launch is stopping the node, not the other way round
            return None
        reason = exit_reason(event.returncode, fatal[0] if fatal else None)
        if event.returncode != 0:
            raise RuntimeError(reason)   # launch logs it, stops RViz and returns 1 (Shutdown would return 0)
        return [Shutdown(reason=reason)]

    actions = [node,
               RegisterEventHandler(OnProcessIO(target_action=node, on_stderr=remember_fatal)),
               RegisterEventHandler(OnProcessExit(target_action=node, on_exit=end_launch))]
    if start_rviz and not _rviz_installed():
        get_logger("launch").warning("rviz:=true but the rviz2 package is not installed: starting without RViz "
                                     "(install rviz2, or pass rviz:=false to silence this)")
    elif start_rviz:
        # RViz in the node's namespace: the view's relative topic names (vggt/points, ...) resolve to the node's
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace, output="screen",
                            arguments=["-d", os.path.join(get_package_share_directory(PACKAGE), "rviz",
                                                          "vggt_quant_ros.rviz")],
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return actions


def generate_launch_description():
    installed_file = os.path.join(get_package_share_directory(PACKAGE), "config", "reconstruct.yaml")
    arguments = [DeclareLaunchArgument(name, default_value=installed_file if default is None else default,
                                       description=description) for name, default, description in LAUNCH_ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_reconstruct)])
