"""The parameter file, launch file and RViz view agree with the node (launch itself runs only where installed)."""

import ast
import importlib.util

import pytest
import yaml

from helpers import REPO
from helpers_ros import DOMAIN_ID, RosGraph

import rclpy  # noqa: I100 (helpers_ros skips this module without rclpy)
from rclpy.expand_topic_name import expand_topic_name
from rclpy.parameter import Parameter
from vggt_quant_core.stream.estimator import Estimator
from vggt_quant_ros.launch_arguments import LAUNCH_ARGUMENTS, OVERRIDABLE
from vggt_quant_ros.reconstruct_node import NODE_NAME, PARAMETERS, ReconstructNode

CONFIG = REPO / "config" / "reconstruct.yaml"
LAUNCH = REPO / "launch" / "reconstruct.launch.py"
RVIZ = REPO / "rviz" / "vggt_quant_ros.rviz"


def _idle(**_):
    """A model that must never be asked for anything: these tests publish no images."""
    return Estimator(predict=lambda images, keys: pytest.fail("unexpected inference"), image_size=56,
                     description="idle", backend="cpu fp32", bits=32)


def test_parameter_file_sets_every_parameter_to_its_default():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert list(values) == [p.name for p in PARAMETERS]
    assert {p.name: values[p.name] for p in PARAMETERS} == {p.name: p.default for p in PARAMETERS}


def test_the_node_reads_the_parameter_file_given_with_ros_args():
    context = rclpy.context.Context()
    rclpy.init(args=["reconstruct", "--ros-args", "--params-file", str(CONFIG), "-p", "window_size:=6",
                     "-p", "image_topics:=['/x/image', '/y/image']"], context=context, domain_id=DOMAIN_ID)
    try:
        node = ReconstructNode(_idle, context=context)
        try:
            assert node.get_parameter("window_size").value == 6
            assert node.get_parameter("image_topics").value == ["/x/image", "/y/image"]
            assert node.get_parameter("conf_percentile").value == 50.0
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_launch_file_declares_the_arguments_and_starts_the_node_and_rviz():
    tree = ast.parse(LAUNCH.read_text())
    compile(tree, str(LAUNCH), "exec")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    # one declaration, over the table that docs/ros.md is checked against (test/test_docs.py)
    assert [c.func.id for c in calls].count("DeclareLaunchArgument") == 1
    assert "LAUNCH_ARGUMENTS" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    declared = {argument.name for argument in LAUNCH_ARGUMENTS}
    assert {"params_file", "checkpoint", "image_topics", "rviz"} <= declared
    # every argument the launch file reads is declared
    read = {n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
            and n.value.id == "arguments" and isinstance(n.slice, ast.Constant)}
    assert read and read <= declared
    # every string parameter a launch argument overrides is declared, and names a parameter of the node
    assert set(OVERRIDABLE) <= declared and set(OVERRIDABLE) <= {p.name for p in PARAMETERS}
    executables = {kw.value.value for c in calls if c.func.id == "Node" for kw in c.keywords if kw.arg == "executable"}
    assert executables == {"reconstruct", "rviz2"}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"reconstruct.yaml", "vggt_quant_ros.rviz", NODE_NAME} <= strings


def test_launch_file_runs_where_launch_ros_is_installed():
    pytest.importorskip("launch_ros")
    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("reconstruct_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    for entity in description.entities:
        if type(entity).__name__ == "DeclareLaunchArgument":
            entity.visit(context)
    context.launch_configurations["image_topics"] = "['/a/image', '/b/image']"
    node = module._reconstruct(context)[0]
    assert node.node_executable == "reconstruct"


def _launch(*arguments):
    """Run the launch file as ``ros2 launch`` does with ``name:=value`` arguments: its exit code and the names of
    the processes it started."""
    pytest.importorskip("launch_ros")
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    started = []
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessStart(on_start=lambda event, context: started.append(event.process_name))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH)),
                                 launch_arguments=[tuple(a.split(":=", 1)) for a in arguments]),
    ]))
    return service.run(), started


@pytest.mark.parametrize("argument", ["rviz:=maybe", "use_sim_time:=yes", "params_file:=/nonexistent.yaml",
                                      "image_topics:=[]", "image_topics:=123", "image_topics:=["])
def test_a_bad_argument_ends_the_launch_before_any_process_starts(argument):
    assert _launch(argument) == (1, [])


def test_the_node_exiting_ends_the_launch_with_exit_code_1(monkeypatch):
    """The node refuses the transport and exits 1; the launch ends too (RViz with it where rviz2 is installed,
    a warning where it is not) instead of returning 0 or leaving RViz up."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    code, started = _launch("transport:=bogus")
    assert code == 1 and "reconstruct-1" in started


def _view_topics(namespace):
    """Display name -> (display class, topic as RViz started in ``namespace`` resolves it, enabled). RViz hands
    the view's names to rclcpp, which expands relative names as rclpy's ``expand_topic_name`` does."""
    displays = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Displays"]
    return {d["Name"]: (d["Class"].split("/")[1], expand_topic_name(d["Topic"]["Value"], "rviz2", namespace),
                        d["Value"]) for d in displays if "Topic" in d}


def _published(namespace, **node_kwargs):
    graph = RosGraph()
    try:
        node = graph.add(ReconstructNode(_idle, context=graph.context, namespace=namespace, **node_kwargs))
        return {name for name, _ in graph.probe.get_publisher_names_and_types_by_node(node.get_name(), namespace)}
    finally:
        graph.close()


def test_rviz_view_shows_the_node_topics_in_map():
    view = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    assert view["Global Options"]["Fixed Frame"] == "map"
    displays = _view_topics("/")
    topics = {kind: topic for kind, topic, enabled in displays.values() if enabled}
    assert topics == {"PointCloud2": "/vggt/points", "Path": "/vggt/path", "PoseArray": "/vggt/poses",
                      "Odometry": "/vggt/odom", "Image": "/vggt/depth/cam0"}
    assert displays["Depth cam1"] == ("Image", "/vggt/depth/cam1", False)   # ticked by hand with two cameras
    assert set(topics.values()) <= _published("/")


def test_rviz_view_follows_the_node_into_its_namespace_with_both_cameras():
    """The launch file starts RViz in the node's namespace: every display, the second camera's depth included,
    resolves to a topic the node publishes there."""
    topics = {topic for _, topic, _ in _view_topics("/robot1").values()}
    assert topics == {"/robot1/vggt/points", "/robot1/vggt/path", "/robot1/vggt/poses", "/robot1/vggt/odom",
                      "/robot1/vggt/depth/cam0", "/robot1/vggt/depth/cam1"}
    two_cameras = Parameter("image_topics", value=["/left/image_raw", "/right/image_raw"])
    assert topics <= _published("/robot1", parameter_overrides=[two_cameras])
