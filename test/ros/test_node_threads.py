"""The node's thread helpers: the latest-wins queue and the stall watch (no ROS needed)."""

import threading
import time

import pytest

from vggt_quant_ros.node_threads import LatestWinsQueue, StallWatch


def test_latest_wins_queue_drops_oldest_and_never_blocks_put():
    queue = LatestWinsQueue(2)
    assert [queue.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert len(queue) == 2 and queue.get(timeout=0) == 3 and queue.get(timeout=0) == 4
    start = time.monotonic()
    assert queue.get(timeout=0.05) is None and time.monotonic() - start < 1.0
    results = []
    waiter = threading.Thread(target=lambda: results.append(queue.get(timeout=10)))
    waiter.start()
    queue.close()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and results == [None]


def test_stall_watch_reports_transitions_once():
    watch = StallWatch(2, timeout_s=1.0, now=0.0)
    assert watch.update(0.5) == ([], [])
    watch.seen(0, 1.0)
    assert watch.update(1.6) == ([1], [])              # camera 1 never sent anything
    assert watch.update(1.7) == ([], []) and watch.stalled == [1]
    watch.seen(1, 1.8)
    assert watch.update(1.9) == ([], [1]) and watch.stalled == []
    assert watch.silent_for(0, 1.9) == pytest.approx(0.9)
