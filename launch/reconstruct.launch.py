"""Start the reconstruct node with its parameter file, and RViz.

    ros2 launch vggt_quant_ros reconstruct.launch.py image_topics:="['/cam0/image_raw', '/cam1/image_raw']" \
        checkpoint:=/path/to/model.pt rviz:=true

Arguments left empty keep the values of ``params_file``. Without the ros2 CLI (pip install), the same node and
file: ``reconstruct --ros-args --params-file config/reconstruct.yaml`` (README, "ROS 2 node").
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "vggt_quant_ros"
OVERRIDABLE = ("checkpoint", "preset", "device", "transport")   # string parameters a launch argument may set


def _reconstruct(context):
    """The node, with the launch arguments that were given laid over the parameter file."""
    overrides = {}
    for name in OVERRIDABLE:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    topics = LaunchConfiguration("image_topics").perform(context)
    if topics:
        parsed = yaml.safe_load(topics)   # "/cam/image" or "['/a/image', '/b/image']"
        overrides["image_topics"] = [parsed] if isinstance(parsed, str) else [str(t) for t in parsed]
    parameters = [LaunchConfiguration("params_file").perform(context)] + ([overrides] if overrides else [])
    return [Node(package=PACKAGE, executable="reconstruct", name="vggt",
                 namespace=LaunchConfiguration("namespace").perform(context), parameters=parameters,
                 output="screen", emulate_tty=True)]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "reconstruct.yaml"),
                              description="parameter file of the reconstruct node"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="weights file or directory (full precision or quantized); empty: file's"),
        DeclareLaunchArgument("preset", default_value="", description="named model (e.g. vggt-1b); empty: file's"),
        DeclareLaunchArgument("image_topics", default_value="",
                              description="one topic, or a YAML list of topics (one per camera); empty: file's"),
        DeclareLaunchArgument("transport", default_value="", description="raw or compressed; empty: file's"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda, cuda:1; empty: file's"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node (topics become /<namespace>/vggt/...)"),
        DeclareLaunchArgument("rviz", default_value="true", description="also start RViz with the shipped view"),
    ]
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                arguments=["-d", os.path.join(share, "rviz", "vggt_quant_ros.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(arguments + [OpaqueFunction(function=_reconstruct), rviz])
