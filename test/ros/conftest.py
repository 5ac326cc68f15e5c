"""A private ROS graph per test (own context on the session's domain id, executor in a thread)."""

import pytest


@pytest.fixture
def graph():
    from helpers_ros import RosGraph

    ros = RosGraph()
    yield ros
    ros.close()
