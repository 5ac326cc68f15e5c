"""The streaming reconstructor without ROS: frames in, windows chained into one map against the ground truth of
a rendered room, metric scale from what frames carry, the tail of a stream, saving, bad frames, and memory that
stays flat over a long stream."""

import collections
import dataclasses
import json
import tracemalloc

import numpy as np
import pytest

from helpers_truth import GroundTruthModel, rig
from vggt_quant_core.data.scenes import surface_distance
from vggt_quant_core.export import read_ply
from vggt_quant_core.stream import (ConfigurationError, Estimator, Frame, FrameRejected, StreamReconstructor,
                                    StreamSettings)
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL

WIDTH, HEIGHT = 112, 84
T0, DT = 1_000_000_000, 100_000_000
SETTINGS = dataclasses.replace(StreamSettings.defaults(), window_size=4, window_stride=2, conf_percentile=0.0,
                               image_size=WIDTH)


def _double(truth, **kwargs):
    model = GroundTruthModel(truth, **kwargs)
    return model, Estimator(predict=model.predict, image_size=WIDTH, description="ground truth", backend="cpu fp32",
                            bits=32)


def _frame(truth, step, **extra):
    return Frame(camera=0, stamp_ns=T0 + step * DT, rgb=truth.images[0, step], index=step, **extra)


def _to_map(truth, scale):
    first = truth.extrinsics[0, 0]
    return lambda x: scale * (x @ first[:, :3].T + first[:, 3]) @ FLU_FROM_OPTICAL.T


def _to_world(truth, scale):
    first = truth.extrinsics[0, 0]
    return lambda y: ((y @ FLU_FROM_OPTICAL) / scale - first[:, 3]) @ first[:, :3]


def test_a_stream_chains_into_the_true_map_reconstructs_its_tail_and_saves_it(tmp_path):
    truth = rig(11, WIDTH, HEIGHT)
    model, estimator = _double(truth, scales=(0.7, 1.3, 0.9, 1.1))
    recon = StreamReconstructor(SETTINGS, estimator)
    results = {step: recon.push(_frame(truth, step)) for step in range(11)}
    assert [step for step, result in results.items() if result is not None] == [3, 5, 7, 9]
    tail = recon.finish()   # frame 10 came after the last window: the newest 4 keyframes, chained through 8-9
    assert [step for _, step in model.windows[-1]] == [8, 9, 10] and tail.update.shared_images == 2
    assert recon.finish() is None
    assert dataclasses.asdict(recon.counts) == dict(frames=11, rejected=0, keyframes=11, windows=5, processed=5,
                                                    failed=0)
    path = recon.trajectory
    assert [pose.index for pose in path] == list(range(11))
    expected = _to_map(truth, 0.7)(np.stack([truth.centre(0, s) for s in range(11)]))
    assert np.allclose([pose.position for pose in path], expected, atol=1e-4)

    out = tmp_path / "run"
    recon.save(out, summary={"source": "test"})
    rows = np.loadtxt(out / "trajectory.txt")
    assert rows.shape == (11, 8) and np.allclose(rows[:, 0], (T0 + DT * np.arange(11)) / 1e9)
    assert np.allclose(rows[:, 1:4], expected, atol=1e-4)
    cameras = json.loads((out / "cameras.json").read_text())["frames"]
    extrinsic = np.array(cameras[6]["extrinsic"])
    assert np.allclose(-extrinsic[:, :3].T @ extrinsic[:, 3], expected[6], atol=1e-4)   # its camera centre
    xyz, _ = read_ply(out / "points.ply")
    assert len(xyz) == len(recon.map) > 1000
    assert np.percentile(surface_distance(truth.scene, _to_world(truth, 0.7)(xyz.astype(np.float64))), 99) < 1e-3
    depth = np.load(out / "depth" / "frame_010.npy")   # the last window's newest frame, in map units
    assert np.allclose(depth, 0.7 * truth.depth[0, 10], rtol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "test" and summary["processed"] == 5 and summary["map_points"] == len(xyz)
    assert summary["map_units"].startswith("up-to-scale")


def test_save_replaces_a_folder_whole_or_not_at_all(tmp_path, monkeypatch):
    truth = rig(11, WIDTH, HEIGHT)
    recon = StreamReconstructor(SETTINGS, _double(truth)[1])
    for step in range(4):
        recon.push(_frame(truth, step))
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    recon.save(out)
    assert not (out / "old.txt").exists() and (out / "points.ply").exists()
    before = sorted(p.name for p in out.iterdir())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vggt_quant_core.stream.reconstructor.write_ply", broken)
    with pytest.raises(OSError, match="disk full"):
        recon.save(out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]   # no scratch folder left behind


def test_the_metric_scale_comes_from_what_frames_carry():
    """Odometry positions on the frames, and depth images pushed beside them, put the map in metres whatever
    scale each window has."""
    truth = rig(11, WIDTH, HEIGHT)
    expected = _to_map(truth, 1.0)(np.stack([truth.centre(0, s) for s in range(10)]))
    for source in ("odometry", "depth"):
        settings = dataclasses.replace(SETTINGS, scale_source=source)
        recon = StreamReconstructor(settings, _double(truth, scales=(0.7, 1.3, 0.9, 1.1))[1])
        for step in range(10):
            if source == "depth":
                recon.push_depth(T0 + step * DT + 1_000_000, truth.depth[0, step])
                recon.push(_frame(truth, step))
            else:
                recon.push(_frame(truth, step, odometry=truth.centre(0, step) + np.array([3.0, 1.0, 0.0])))
        positions = np.array([pose.position for pose in recon.trajectory])
        assert np.abs(positions - expected).max() < 0.01 * np.abs(expected).max(), source
        assert recon.processor.scale.metric and recon.processor.scale.rejected == 0


def test_bad_frames_are_refused_with_a_reason_and_the_stream_goes_on():
    truth = rig(11, WIDTH, HEIGHT)
    recon = StreamReconstructor(SETTINGS, _double(truth)[1])
    recon.push(_frame(truth, 1))
    with pytest.raises(FrameRejected, match="not after the previous one") as stamp:
        recon.push(_frame(truth, 0))
    with pytest.raises(FrameRejected, match="image of 20x10 is too small") as small:
        recon.push(Frame(camera=0, stamp_ns=T0 + 5 * DT, rgb=np.zeros((10, 20, 3), np.uint8)))
    with pytest.raises(FrameRejected, match="camera 1 is not one of the stream's 1"):
        recon.push(Frame(camera=1, stamp_ns=T0 + 6 * DT, rgb=truth.images[0, 2]))
    assert (stamp.value.kind, small.value.kind) == ("stamp", "image") and recon.counts.rejected == 2
    results = [recon.push(_frame(truth, step)) for step in range(7, 11)]
    assert [r is not None for r in results] == [False, False, True, False] and recon.counts.keyframes == 5


def test_settings_are_checked_and_only_runtime_ones_change_while_streaming():
    with pytest.raises(ConfigurationError, match="window_stride \\(4\\) must be smaller than window_size \\(4\\)"):
        StreamSettings.from_parameters({"window_size": 4})
    with pytest.raises(ConfigurationError, match="parameter voxel_size is 0.0; expected a value in"):
        StreamSettings.from_parameters({"voxel_size": 0.0})
    with pytest.raises(ConfigurationError, match="parameter cloud_mode is 'all'; expected one of map, window"):
        StreamSettings.from_parameters({"cloud_mode": "all"})
    with pytest.raises(ConfigurationError, match="scale_source 'stereo' needs two image topics"):
        StreamSettings.from_parameters({"scale_source": "stereo"})
    assert StreamSettings.from_parameters({"voxel_size": 1, "image_topics": ["/x"]}).voxel_size == 1.0
    recon = StreamReconstructor(SETTINGS)
    recon.configure(dataclasses.replace(SETTINGS, min_motion=5.0, conf_min=2.0))
    assert recon.settings.min_motion == 5.0
    with pytest.raises(ConfigurationError, match="window_size cannot change while a stream runs"):
        recon.configure(dataclasses.replace(SETTINGS, window_size=6))
    with pytest.raises(ValueError, match="no model yet"):
        recon.process([])


def test_memory_stays_flat_over_a_long_stream():
    """200 frames (a camera sweeping back and forth along the rig's orbit): after the first windows nothing the
    reconstructor keeps grows: the map is capped, the path bounded, and only one window of frames is held."""
    truth = rig(11, WIDTH, HEIGHT)
    settings = dataclasses.replace(SETTINGS, max_map_points=3000, path_max_size=50, pixel_stride=4)
    model, estimator = _double(truth, scales=(0.7, 1.3, 0.9, 1.1))
    model.windows = collections.deque(maxlen=1)   # the double's own record of calls is not the reconstructor's
    recon = StreamReconstructor(settings, estimator)
    sweep = list(range(11)) + list(range(9, 0, -1))
    traced = []
    tracemalloc.start()
    try:
        for frame in range(200):
            rgb = truth.images[0, sweep[frame % len(sweep)]]
            if recon.push(Frame(camera=0, stamp_ns=T0 + frame * DT, rgb=rgb, index=frame)) is not None \
                    and recon.counts.processed in (20, 95):
                traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert recon.counts.processed == 99 and recon.counts.failed == 0
    assert len(recon.map) <= 3000 and len(recon.trajectory) == 50
    assert traced[1] - traced[0] < 100_000, traced   # bytes over 75 windows
