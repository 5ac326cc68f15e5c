"""Frame bookkeeping from camera streams to windows of keyframes."""

import numpy as np
import pytest

from vggt_quant_core.stream.windowing import (ApproximateSync, Frame, FrameSet, KeyframeGate, SlidingWindow, StampOrder,
                                              compose_window, thumbnail)

MS = 1_000_000


def test_stamps_must_increase_per_camera():
    order = StampOrder(2)
    assert order.check(0, 100) is None and order.check(1, 50) is None  # cameras are independent
    assert "not after the previous one" in order.check(0, 100)
    assert order.check(0, 99) is not None
    assert order.check(0, 101) is None and order.check(1, 51) is None


def test_sync_pairs_within_slop_and_skips_orphans():
    sync = ApproximateSync(2, slop_ns=10 * MS)
    assert sync.add(0, 0, "a0") is None              # waits for camera 1
    assert sync.add(1, 4 * MS, "b0") == ["a0", "b0"]
    assert sync.add(0, 100 * MS, "a1") is None
    assert sync.add(1, 130 * MS, "b1") is None       # 30 ms apart: no pair, a1 stays an orphan
    assert sync.add(0, 133 * MS, "a2") == ["a2", "b1"]
    assert sync.add(1, 140 * MS, "b2") is None       # a1 and a2 were consumed: only later items can match
    assert sync.add(0, 145 * MS, "a3") == ["a3", "b2"]
    assert ApproximateSync(1, 0).add(0, 5, "x") == ["x"]


def test_thumbnail_averages_blocks_of_a_centred_crop():
    rgb = np.zeros((50, 66, 3), np.uint8)              # 4x4 blocks of 12x16: the crop drops one row/column each side
    rgb[1:25, 1:33] = 200                              # top-left quarter of the crop
    expected = np.zeros((4, 4))
    expected[:2, :2] = 200
    assert np.allclose(thumbnail(rgb, width=4, height=4), expected)
    with pytest.raises(ValueError, match="smaller than"):
        thumbnail(rgb[:10], width=32, height=24)


def test_keyframe_gate_count_time_and_motion():
    gate = KeyframeGate(frame_stride=3)
    flat = np.zeros((24, 32), np.float32)
    due = []
    for step in range(7):
        due.append(gate.due(step * 10 * MS))
        if due[-1]:
            gate.accept(step * 10 * MS, flat)
    assert due == [True, False, False, True, False, False, True]

    gate = KeyframeGate(min_interval_ns=25 * MS)
    gate.accept(0, flat)
    assert [gate.due(t * MS) for t in (10, 20, 30)] == [False, False, True]

    gate = KeyframeGate(min_motion=5.0)
    assert gate.moved(flat)                            # the first keyframe needs no motion
    gate.accept(0, flat)
    assert not gate.moved(flat + 4.0) and gate.moved(flat + 6.0)


def test_sliding_window_overlaps_and_validates():
    window = SlidingWindow(size=4, stride=2)
    out = [window.add(i) for i in range(9)]
    assert out[:3] == [None] * 3 and out[3] == [0, 1, 2, 3]
    assert out[4] is None and out[5] == [2, 3, 4, 5] and out[7] == [4, 5, 6, 7] and out[8] is None
    for stride in (0, 4):
        with pytest.raises(ValueError, match="window_stride"):
            SlidingWindow(size=4, stride=stride)


def _sets(stamps):
    return [FrameSet((Frame(camera=0, stamp_ns=s, frame_id="c", rgb=np.zeros((1, 1, 3), np.uint8)),)) for s in stamps]


def test_compose_window_keeps_the_chain_after_drops():
    sets = _sets(range(10))
    # no drop: the latest window already starts with the anchors
    assert compose_window(sets[2:6], sets[2:4], 4) == sets[2:6]
    # windows [2..5] and [4..7] were dropped: the anchors (0, 1) come back, followed by the newest sets
    assert [fs.stamp_ns for fs in compose_window(sets[6:10], sets[0:2], 4)] == [0, 1, 8, 9]
    assert compose_window(sets[0:4], [], 4) == sets[0:4]
