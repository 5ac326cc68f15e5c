"""The streaming reconstructor without ROS: frames in, windows chained into one map against the ground truth of
a rendered room, metric scale from what frames carry, the tail of a stream, saving, bad frames, and memory that
stays flat over a long stream."""

import collections
import dataclasses
import json
import threading
import time
import tracemalloc
from datetime import datetime

import numpy as np
import pytest

from helpers_truth import GroundTruthModel, rig
from vggt_quant_core.data.scenes import surface_distance
from vggt_quant_core.export import read_ply
from vggt_quant_core.stream import (ConfigurationError, Estimator, Frame, FrameRejected, StreamReconstructor,
                                    StreamSettings, estimator_from_model)
from vggt_quant_core.stream.mapping import FLU_FROM_OPTICAL, VoxelMap
from vggt_quant_core.stream.reconstructor import StaleWindow, dated_folder

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


def _in_thread(call):
    """Run ``call`` in a thread; the thread and a list that receives its result or exception."""
    out = []

    def run():
        try:
            out.append(call())
        except Exception as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_reset_starts_a_new_map_and_drops_the_window_being_inferred():
    truth = rig(11, WIDTH, HEIGHT)
    gate = threading.Event()
    gate.set()
    model, estimator = _double(truth, scales=(0.7, 1.3, 0.9), gate=gate)
    recon = StreamReconstructor(SETTINGS, estimator)
    for step in range(4):
        recon.push(_frame(truth, step))
    assert len(recon.trajectory) == 4 and len(recon.map) > 1000
    window = None
    for step in (4, 5):
        window = recon.add_keyframe([_frame(truth, step)])
    gate.clear()
    model.entered.clear()
    worker, outcome = _in_thread(lambda: recon.process(window))   # the second window, held in the model
    assert model.entered.wait(10)
    started, points = time.monotonic(), len(recon.map)
    assert recon.reset() == (points, 4)   # what it dropped
    snapshot = recon.snapshot()
    assert time.monotonic() - started < 1.0 and worker.is_alive()   # neither waited for the model
    assert snapshot.path == [] and len(snapshot.xyz) == 0 and snapshot.summary["resets"] == 1
    gate.set()
    worker.join(10)
    assert isinstance(outcome[0], StaleWindow) and len(recon.map) == 0 and recon.trajectory == []
    assert recon.counts.processed == 1 and recon.counts.failed == 0
    # the stream goes on from scratch: stamps may start over (a replayed recording), the map at the new origin
    for step in range(3, 7):
        recon.push(_frame(truth, step))
    first = truth.extrinsics[0, 3]
    expected = 0.9 * (np.stack([truth.centre(0, s) for s in range(3, 7)]) @ first[:, :3].T + first[:, 3]) \
        @ FLU_FROM_OPTICAL.T
    assert np.allclose([pose.position for pose in recon.trajectory], expected, atol=1e-4)


def test_after_a_reset_no_model_work_of_the_old_stream_is_reused():
    """The estimator keeps the last window's per-frame work keyed by frame; a new stream whose frames have the old
    stamps (another recording, or the same replayed) must not get the old frames' work."""
    from vggt_quant_core.presets import load_model

    model, size, _ = load_model(None, "vggt-tiny-random")
    first, second = rig(11, WIDTH, HEIGHT).images[0, :4], rig(11, WIDTH, HEIGHT).images[0, 6:10]
    settings = dataclasses.replace(SETTINGS, image_size=112)

    def depth_of(stream, frames):
        for step, rgb in enumerate(frames):
            result = stream.push(Frame(camera=0, stamp_ns=T0 + step * DT, rgb=rgb, index=step))
        return result.depth[0].depth

    recon = StreamReconstructor(settings, estimator_from_model(model, size, "tiny"))
    depth_of(recon, first)
    recon.reset()
    fresh = StreamReconstructor(settings, estimator_from_model(model, size, "tiny"))
    assert np.array_equal(depth_of(recon, second), depth_of(fresh, second), equal_nan=True)


def test_a_snapshot_waits_for_a_window_being_placed_and_never_holds_half_of_it(monkeypatch, tmp_path):
    truth = rig(11, WIDTH, HEIGHT)
    recon = StreamReconstructor(SETTINGS, _double(truth)[1])
    for step in range(4):
        recon.push(_frame(truth, step))
    placing, release = threading.Event(), threading.Event()
    add = VoxelMap.add

    def held_add(self, sums):   # the second window's points are in the map, its poses not yet in the path
        add(self, sums)
        placing.set()
        assert release.wait(10)

    monkeypatch.setattr(VoxelMap, "add", held_add)
    worker, _ = _in_thread(lambda: [recon.push(_frame(truth, step)) for step in (4, 5)])
    assert placing.wait(10)
    reader, snapshot = _in_thread(recon.snapshot)
    reader.join(0.3)
    assert reader.is_alive()    # waits for the window to be placed whole
    release.set()
    worker.join(10)
    reader.join(10)
    assert len(snapshot[0].path) == 6 and len(snapshot[0].xyz) == len(recon.map)
    folder = dated_folder(tmp_path, "map", datetime(2026, 1, 2, 3, 4, 5))
    snapshot[0].save(folder)
    assert folder.name == "map_2026-01-02_03-04-05" and len(np.loadtxt(folder / "trajectory.txt")) == 6
    assert dated_folder(tmp_path, "map", datetime(2026, 1, 2, 3, 4, 5)).name == "map_2026-01-02_03-04-05_2"


FISHEYE_LENS = (-0.02, 0.01, -0.003, 0.0005)


def test_distorted_keyframes_reach_the_model_undistorted_like_opencv_does_it(monkeypatch):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the [dev] extra) is the reference")
    from vggt_quant_core.geometry import distortion
    from vggt_quant_core.stream import window_processor

    truth = rig(11, WIDTH, HEIGHT)
    model, _ = _double(truth)
    inputs = []
    estimator = Estimator(predict=lambda images, keys: inputs.append(images) or model.predict(images, keys),
                          image_size=WIDTH, description="ground truth", backend="cpu fp32", bits=32)
    maps, make_map = [], distortion.undistortion_map
    monkeypatch.setattr(distortion, "undistortion_map", lambda *a: maps.append(a) or make_map(*a))
    measured, pairs = [], window_processor.depth_pairs
    monkeypatch.setattr(window_processor, "depth_pairs", lambda depth, *a: measured.append(depth) or pairs(depth, *a))
    k = truth.intrinsics
    settings = dataclasses.replace(SETTINGS, scale_source="depth")
    problems = []
    recon = StreamReconstructor(settings, estimator, warn=lambda *problem: problems.append(problem))
    for step in range(4):
        recon.push_depth(T0 + step * DT, truth.depth[0, step])
        recon.push(_frame(truth, step, intrinsics=k, distortion_model="equidistant", distortion=FISHEYE_LENS))
    assert problems == [] and len(maps) == 1 and recon.lenses.rectified == {0: "equidistant"}   # one map, 4 frames
    map_x, map_y = cv2.fisheye.initUndistortRectifyMap(k, np.array(FISHEYE_LENS), np.eye(3), k, (WIDTH, HEIGHT),
                                                       cv2.CV_32FC1)
    inside = (map_x > 1) & (map_y > 1) & (map_x < WIDTH - 2) & (map_y < HEIGHT - 2)
    for step in range(4):
        expected = cv2.remap(truth.images[0, step], map_x, map_y, cv2.INTER_LINEAR).astype(float)
        seen = inputs[0][step].permute(1, 2, 0).numpy() * 255
        assert np.abs(seen - expected)[inside].max() <= 2.5    # OpenCV's 5-bit interpolation weights
        # the depth registered to the distorted image follows it to the pinhole
        depth = cv2.remap(truth.depth[0, step], map_x, map_y, cv2.INTER_LINEAR)
        both = inside & np.isfinite(measured[step])
        assert both.mean() > 0.5 and np.allclose(measured[step][both], depth[both], rtol=0.02)
    # a new CameraInfo (another D): a new map; an unknown model and rectify off: named, images as they are
    recon.push(_frame(truth, 4, intrinsics=k, distortion_model="equidistant", distortion=(0.0,) * 4))
    recon.push(_frame(truth, 5, intrinsics=k, distortion_model="fov", distortion=(0.9,)))
    assert [a[1:3] for a in maps[1:]] == [("equidistant", (0.0,) * 4), ("fov", (0.9,))]
    assert recon.lenses.rectified == {}
    assert problems[-1] == (0, "distortion", "distortion model 'fov' is not supported (supported: equidistant, "
                            "plumb_bob, rational_polynomial): the images are used unrectified")
    off = StreamReconstructor(dataclasses.replace(SETTINGS, rectify="off"), estimator,
                              warn=lambda *problem: problems.append(problem))
    for step in range(4):
        off.push(_frame(truth, step, intrinsics=k, distortion_model="plumb_bob", distortion=(0.1, 0, 0, 0, 0)))
    assert problems[-1][1:] == ("distortion", "the CameraInfo has plumb_bob distortion and rectify is off: the "
                                "images are used as pinhole images (bent geometry)")
    assert np.allclose(inputs[-1][0].permute(1, 2, 0).numpy() * 255, truth.images[0, 0], atol=1e-3)
