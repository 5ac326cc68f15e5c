"""The node's parameter table and its checks (no ROS needed)."""

import dataclasses

import pytest

from vggt_quant_core.stream.settings import STREAM_PARAMETERS, StreamSettings
from vggt_quant_ros.parameters import PARAMETERS, ConfigurationError, settings_from

DEFAULTS = {p.name: p.default for p in PARAMETERS}


def test_the_node_declares_every_stream_parameter_and_hands_them_on():
    names = [p.name for p in PARAMETERS]
    assert [p.name for p in STREAM_PARAMETERS] == [n for n in names if n in {p.name for p in STREAM_PARAMETERS}]
    node = settings_from(DEFAULTS | {"image_topics": ["/a", "/b"], "window_size": 6, "min_motion": 3.0})
    assert node.stream == dataclasses.replace(StreamSettings.defaults(cameras=2), window_size=6, min_motion=3.0)


@pytest.mark.parametrize("change, message", [
    ({"scale_source": "stereo"}, "needs two image topics"),
    ({"scale_source": "stereo", "image_topics": ["/a", "/b"]}, "needs stereo_baseline_m > 0 or camera_info_topics"),
    ({"scale_source": "odometry", "odometry_topic": ""}, "needs odometry_topic or odometry_frame"),
    ({"scale_source": "depth"}, "needs depth_topic"),
    ({"scale_source": "depth", "depth_topic": "/d", "depth_camera": 1}, "depth_camera is 1 but there are 1 image"),
])
def test_scale_source_configuration_errors(change, message):
    values = {p.name: p.default for p in PARAMETERS} | change
    with pytest.raises(ConfigurationError, match=message):
        settings_from(values)
