"""ROS 2 node ``reconstruct``: camera streams -> sliding windows of keyframes -> VGGT -> camera poses,
depth images and a coloured point cloud in one consistent ``map`` frame.

Threads (spelled out because inference takes seconds):

* image and CameraInfo subscriptions share one mutually exclusive callback group: they decode,
  synchronise and gate frames, and push finished windows into a latest-wins queue (never block);
* a worker thread loads the model, then takes windows from the queue and runs VGGT, the mapping
  and the publishing; windows replaced in the queue while it works are counted as dropped;
* the diagnostics timer has a group of its own, so it reports while the worker is busy;
* services: ``~/reset`` runs in the input group (it never interleaves with a frame's intake), ``~/save_map`` in a
  group of its own; both answer while the worker infers: the reconstruction changes its map only in a short
  locked step after the model, the save writes a copy taken under that lock, and a window whose inference began
  before a reset is dropped instead of reaching the new map (``_outputs_lock`` keeps it from being published).

``main`` spins a ``MultiThreadedExecutor`` so the callback groups run in parallel. The node does the ROS
I/O over the streaming library's ``StreamReconstructor``: the input group runs its input stage
(``synchronise``, ``add_keyframe``), the worker its window stage (``process``). The parameters are in
``parameters``, the publishers in ``outputs``, /tf in ``tf_output`` and the status in ``diagnostics``.
"""

import dataclasses
import sys
import threading
import time
import traceback
from datetime import datetime
from typing import Callable, List, Optional, Sequence, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from vggt_quant_core.model import CheckpointError
from vggt_quant_core.stream import Estimator, Frame, FrameRejected, FrameSet, StreamReconstructor, load_estimator
from vggt_quant_core.stream.reconstructor import StaleWindow, dated_folder
from vggt_quant_core.stream.mapping import AlignmentError
from vggt_quant_core.stream.metric_scale import scale_mode
from vggt_quant_core.stream.settings import NODE_NAME
from vggt_quant_core.stream.window_processor import WindowError

from . import conversions
from .diagnostics import Stats, Throttle, diagnostic_status, stall_warning
from .launch_arguments import ArgumentError, check_params_file, params_files_of, unknown_parameters
from .node_threads import LatestWinsQueue, StallWatch
from .outputs import WindowPublishers
from .parameters import PARAMETERS, ConfigurationError, NodeSettings, Param, settings_from
from .scale_inputs import ScaleInputs
from .tf_output import TfOutput

# problem kinds logged the first time only (diagnostics keep showing the latest)
WARN_ONCE = ("scale-missing", "scale-rejected", "scale-clipped", "depth", "baseline", "distortion", "tf-base",
             "tf-odom")
ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY}


def _descriptor(param: Param) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=param.description, read_only=not param.runtime)
    if param.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(param.choices)
    if param.range is not None:
        low, high = param.range
        if isinstance(param.default, int) and not isinstance(param.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


class ReconstructNode(Node):
    """Sliding-window VGGT reconstruction; see the module docstring for the threads."""

    def __init__(self, estimator_loader: Callable[..., Estimator] = load_estimator, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self._setup(estimator_loader)
        except ConfigurationError:
            self.destroy_node()
            raise

    # ----------------------------------------------------------------------------------------- set-up
    def _setup(self, estimator_loader: Callable[..., Estimator]) -> None:
        values = {}
        try:
            for param in PARAMETERS:
                default = ARRAY_TYPES[param.items] if param.default == [] else param.default
                values[param.name] = self.declare_parameter(param.name, default, _descriptor(param)).value
        except ParameterException as exc:
            raise ConfigurationError(str(exc)) from exc
        # the only reading of parameters: replaced as a whole when runtime parameters change
        self._settings: NodeSettings = settings_from(values)
        s = self._settings
        self.fatal: Future = Future()    # completed with a message when the node cannot go on
        self.estimator: Optional[Estimator] = None
        self._estimator_loader = estimator_loader
        self._topics = list(s.image_topics)
        count = len(self._topics)
        self._names = list(s.camera_names) or [f"cam{i}" for i in range(count)]
        self._stats = Stats(frames_received=[0] * count, scale=scale_mode(s.scale_source))
        self._stats_lock = threading.Lock()
        self._throttle = Throttle(once=WARN_ONCE)
        self._camera_infos: List[Optional[CameraInfo]] = [None] * count

        self._stall = StallWatch(count, s.camera_timeout_s, time.monotonic())
        self._queue: LatestWinsQueue[List[FrameSet]] = LatestWinsQueue(s.max_queue)

        # worker side; the lock keeps a reset from interleaving with the publishing of a window
        self._outputs = WindowPublishers(self, self._names, s)
        self._outputs_lock = threading.Lock()
        self._tf = TfOutput(self, s, lambda kind, text: self._worker_problem(None, kind, text),
                            MutuallyExclusiveCallbackGroup())
        if s.tf_mode == "map_odom" and s.scale_source == "none":
            self.get_logger().warning("tf_mode 'map_odom' with scale_source 'none': the map is in model units, not "
                                      "metres, so map -> odom mixes units; set a scale_source")
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._stop = threading.Event()

        input_group = MutuallyExclusiveCallbackGroup()
        compressed = s.transport == "compressed"
        for camera, topic in enumerate(self._topics):
            self.create_subscription(
                CompressedImage if compressed else Image, topic + "/compressed" if compressed else topic,
                lambda msg, camera=camera: self._on_image(camera, msg), qos_profile_sensor_data,
                callback_group=input_group, qos_overriding_options=QoSOverridingOptions.with_default_policies())
        for camera, topic in enumerate(s.camera_info_topics):
            self.create_subscription(CameraInfo, topic, lambda msg, camera=camera: self._on_camera_info(camera, msg),
                                     qos_profile_sensor_data, callback_group=input_group)
        # the reconstruction: its input stage runs in the input group, its window stage in the worker
        self.reconstruction = StreamReconstructor(s.stream, warn=self._worker_problem)
        self.scale_inputs = ScaleInputs(self, s, input_group, self._input_problem, self.reconstruction)
        self.reconstruction.sensors = self.scale_inputs.sensors   # the node measures with its topics and /tf
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=input_group)
        self.create_service(Trigger, "~/save_map", self._on_save_map, callback_group=MutuallyExclusiveCallbackGroup())
        self._last_report = time.monotonic()
        self.create_timer(s.diagnostics_period_s, self._report, callback_group=MutuallyExclusiveCallbackGroup())
        self.add_post_set_parameters_callback(self._apply_runtime_parameters)

        self._worker = threading.Thread(target=self._work, name="vggt-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"listening to {', '.join(self._topics)} ({s.transport}); windows of "
                               f"{s.window_size} keyframes every {s.window_stride}; outputs in "
                               f"'{s.map_frame}' under {self.get_fully_qualified_name()}/")

    def _apply_runtime_parameters(self, params: Sequence[Parameter]) -> None:
        """Post-set callback: a new settings snapshot, handed to the reconstruction and the stall watch."""
        s = self._settings = dataclasses.replace(self._settings, **{p.name: p.value for p in params})
        self.reconstruction.configure(s.stream)
        self._stall.timeout_s = s.camera_timeout_s

    # ------------------------------------------------------------------------------------------ input
    def _on_camera_info(self, camera: int, msg: CameraInfo) -> None:
        self._camera_infos[camera] = msg
        self.scale_inputs.camera_info(camera, msg)

    def _on_image(self, camera: int, msg) -> None:
        """Input group. ``frames_received`` counts messages whose handling is complete."""
        now = time.monotonic()
        with self._stats_lock:
            self._stall.seen(camera, now)
        try:
            self._ingest(camera, msg, now)
        except Exception:  # a bug must not take the executor down with it
            self.get_logger().error(f"image callback failed:\n{traceback.format_exc()}")
        finally:
            with self._stats_lock:
                self._stats.frames_received[camera] += 1

    def _ingest(self, camera: int, msg, now: float) -> None:
        """Check, synchronise, gate and decode (only what the gates let through); hand complete windows to the
        worker (never blocks)."""
        recon = self.reconstruction
        try:
            group = recon.synchronise(camera, conversions.stamp_to_ns(msg.header.stamp), (now, msg))
            if group is None:
                return
            frames = []
            for index, (received, message) in enumerate(group):
                try:
                    frames.append(self._to_frame(index, message, received))
                except conversions.ImageError as exc:
                    raise FrameRejected(index, "image", str(exc)) from exc
            latest = recon.add_keyframe(frames)
        except FrameRejected as exc:
            self._input_problem(exc.camera, exc.kind, str(exc))
            return
        with self._stats_lock:
            self._stats.keyframes = recon.counts.keyframes
            if latest is None:
                return
            dropped = self._queue.put(latest)
            self._stats.windows_emitted += 1
            self._stats.dropped_windows += dropped
            total = self._stats.dropped_windows
        if dropped:
            cause = ("the model is still loading" if self.estimator is None else "inference is slower than the input"
                     "; raise window_stride/frame_stride or use a faster device")
            self._warn_throttled(("dropped",), f"dropped a waiting window ({total} so far): {cause}")

    def _to_frame(self, camera: int, msg, received: float) -> Frame:
        start = time.perf_counter()
        if isinstance(msg, CompressedImage):
            rgb = conversions.compressed_to_rgb(msg)
        else:
            rgb = conversions.image_to_rgb(msg)
        frame_ids = self._settings.camera_frame_ids
        frame_id = (frame_ids[camera] if frame_ids else msg.header.frame_id
                    or f"{self._names[camera]}_optical_frame")
        lens = {}
        info = self._camera_infos[camera]
        if info is not None:
            if (info.width, info.height) == (rgb.shape[1], rgb.shape[0]):
                lens = dict(intrinsics=conversions.intrinsics_from_info(info),
                            distortion_model=info.distortion_model, distortion=tuple(info.d))
            else:
                self._input_problem(camera, "camera_info", f"CameraInfo is for {info.width}x{info.height} but the "
                                    f"image is {rgb.shape[1]}x{rgb.shape[0]}; using predicted intrinsics, "
                                    "unrectified", count_as_rejected=False)
        return Frame(camera=camera, stamp_ns=conversions.stamp_to_ns(msg.header.stamp), frame_id=frame_id, rgb=rgb,
                     received=received, convert_seconds=time.perf_counter() - start, **lens)

    def _input_problem(self, camera: int, kind: str, text: str, count_as_rejected: bool = True) -> None:
        """A frame-level problem of one camera: counted, shown in diagnostics, logged throttled."""
        if count_as_rejected:
            with self._stats_lock:
                self._stats.rejected_frames += 1
        self._warn_throttled((camera, kind), f"{self._names[camera]} ({self._topics[camera]}): {text}")

    def _warn_throttled(self, key: Tuple, line: str) -> None:
        """One warning per ``key`` at most every 5 s, with the number of repeats in between; kinds in
        ``WARN_ONCE`` only the first time (diagnostics keep showing the latest)."""
        with self._stats_lock:
            self._stats.last_problem = line
            repeats = self._throttle.due(key, time.monotonic())
        if repeats is not None:
            self.get_logger().warning(line + (f" ({repeats} more since the last report)" if repeats else ""))

    def _worker_problem(self, camera: Optional[int], kind: str, text: str) -> None:
        """A problem the reconstruction met that does not fail a frame or a window."""
        if camera is None:
            self._warn_throttled((kind,), text)
        else:
            self._input_problem(camera, kind, text, count_as_rejected=False)

    # ----------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        """Worker thread: load the model, then process windows until the node is destroyed."""
        s = self._settings
        try:
            self.estimator = self._estimator_loader(checkpoint=s.checkpoint, preset="" if s.checkpoint else s.preset,
                                                    device=s.device, precision=s.precision)
        except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
            self._fail(f"cannot load the model: {exc}")
            return
        self.reconstruction.use(self.estimator)
        self.get_logger().info(f"model ready: {self.estimator.description} ({self.estimator.backend}, "
                               f"{self.estimator.bits}-bit weights), input width "
                               f"{self.reconstruction.processor.input_size}")
        while not self._stop.is_set():
            latest = self._queue.get(timeout=0.2)
            if latest is None:
                continue
            try:
                self._process(latest)
            except StaleWindow:   # ~/reset came while it was inferred: it belongs to the old map
                with self._stats_lock:
                    self._stats.discarded_windows += 1
            except (WindowError, AlignmentError) as exc:
                self._window_failed(f"window skipped: {exc}")
            except RuntimeError as exc:  # e.g. CUDA out of memory: worth a line, not a dead worker
                self._window_failed(f"window failed: {str(exc).splitlines()[0]}")
            except Exception:  # a bug: keep serving, but show where
                if not self._stop.is_set():
                    self._window_failed(f"window failed unexpectedly:\n{traceback.format_exc()}")

    def _fail(self, message: str) -> None:
        if self._stop.is_set():
            return
        self.get_logger().fatal(message)
        with self._stats_lock:
            self._stats.last_problem = message
        self.fatal.set_result(message)

    def _window_failed(self, message: str) -> None:
        self.get_logger().warning(message)
        with self._stats_lock:
            self._stats.failed_windows += 1
            self._stats.last_problem = message.splitlines()[0]

    def _process(self, latest: List[FrameSet]) -> None:
        """Worker: one window from keyframes to published messages, with this moment's settings."""
        settings = self._settings
        result = self.reconstruction.process(latest)
        if self._stop.is_set():
            return
        with self._outputs_lock:
            if result.generation != self.reconstruction.generation:
                raise StaleWindow("reset after the window was placed")
            if result.rescaled_map != 1.0:
                self.get_logger().info(f"the map is in metres from now on ({settings.scale_source}); what it held "
                                       f"was scaled by {result.rescaled_map:.4g}")
            self._outputs.publish(result, settings)
            self._tf.window(result)
        result.clock.lap("publish")
        result.clock.finish()
        with self._stats_lock:
            stats = self._stats
            stats.windows_processed += 1
            stats.timings_ms, stats.cpu_ms = result.clock.wall_ms, result.clock.cpu_ms
            stats.window_latency_ms = 1000 * (time.monotonic() - result.window[-1].frames[0].received)
            stats.alignment_rmse, stats.alignment_scale = result.update.rmse, result.update.scale
            stats.map_points = result.map_points
            stats.scale = result.scale_status
            stats.rectified = self.reconstruction.lenses.rectified

    # --------------------------------------------------------------------------------------- services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Input group: a new map from the next keyframe; windows waiting or being inferred are discarded."""
        with self._outputs_lock:
            points, poses = self.reconstruction.reset()
            waiting = self._queue.clear()
            self._tf.reset()
            self._outputs.clear(self.get_clock().now().nanoseconds)
        with self._stats_lock:
            self._stats.discarded_windows += waiting
            self._stats.resets += 1
            self._stats.map_points = 0
        response.success = True
        response.message = f"map reset: {points} points and {poses} poses dropped; the next keyframe starts a new map"
        self.get_logger().info(response.message)
        return response

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Service group: the map of this moment (a copy: the worker goes on) into a new folder under
        ``map_save_dir``, atomically; the reply's message is the folder (or why there is none)."""
        parent = self._settings.map_save_dir
        snapshot = self.reconstruction.snapshot({"node": self.get_fully_qualified_name(), "saved_by": "~/save_map",
                                                 "model": self.estimator.description if self.estimator else ""})
        if not snapshot.path:
            response.success = False
            response.message = ("nothing to save: no window has been reconstructed yet"
                                + (" since the last reset" if self.reconstruction.generation else ""))
            return response
        try:
            folder = dated_folder(parent, "map", datetime.now())
            snapshot.save(folder)
        except (OSError, ValueError) as exc:
            response.success = False
            response.message = f"cannot save the map under {parent}: {exc}"
            self.get_logger().warning(response.message)
            return response
        response.success, response.message = True, str(folder.resolve())
        self.get_logger().info(f"map saved to {response.message} ({len(snapshot.xyz)} points, {len(snapshot.path)} "
                               "poses)")
        return response

    # ------------------------------------------------------------------------------------ diagnostics
    def stats(self) -> Stats:
        """A consistent copy of the counters and timings."""
        with self._stats_lock:
            return self._stats.copy()

    def _report(self) -> None:
        """Timer group: camera watchdog and /diagnostics."""
        now = time.monotonic()
        with self._stats_lock:
            stalled, resumed = self._stall.update(now)
            silent = {c: self._stall.silent_for(c, now) for c in self._stall.stalled}
            stats = self._stats.copy()
            self._stats.processed_at_last_report = stats.windows_processed
            self._stats.problems_at_last_report = stats.problems
        for camera in stalled:
            self.get_logger().warning(stall_warning(self._names, self._topics, camera, stats, silent[camera]))
        for camera in resumed:
            self.get_logger().info(f"{self._names[camera]} ({self._topics[camera]}): images arrive again")
        elapsed, self._last_report = now - self._last_report, now
        fatal = self.fatal.result() if self.fatal.done() else None
        array = DiagnosticArray(status=[diagnostic_status(stats, self._names, silent, fatal, self.estimator,
                                                          len(self._queue), elapsed)])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # --------------------------------------------------------------------------------------- shutdown
    def destroy_node(self) -> None:
        """Stop the worker (it finishes the window in hand) before the publishers go away."""
        if hasattr(self, "_worker"):
            self._stop.set()
            self._queue.close()
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Console script ``reconstruct``: ``reconstruct --ros-args --params-file config/reconstruct.yaml``."""
    try:
        for path in params_files_of(sys.argv if args is None else args):
            check_params_file(path, argument="--params-file")   # rcl would fail in rclpy.init with a traceback
            unknown = unknown_parameters(path, NODE_NAME, [param.name for param in PARAMETERS])
            if unknown:
                rclpy.logging.get_logger(NODE_NAME).warning(
                    f"{path} sets parameters this node does not have, ignored: {', '.join(unknown)}")
        with rclpy.init(args=args):
            node = ReconstructNode()
            executor = MultiThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin_until_future_complete(node.fatal)
            finally:
                executor.shutdown()
                node.destroy_node()
            return 1 if node.fatal.done() else 0
    except (ArgumentError, ConfigurationError) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"configuration error: {exc}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0


if __name__ == "__main__":
    sys.exit(main())
