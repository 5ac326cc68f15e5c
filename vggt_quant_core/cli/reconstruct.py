"""``vggt-quant reconstruct``: a sequence of any length (image files, a video, a rosbag2 recording) through the
streaming reconstruction of the ROS node, with the node's parameter file; map, trajectory and depth out."""

import argparse
import dataclasses
import sys
from pathlib import Path

from ..stream import StreamSettings, default_parameter_file, load_estimator, read_parameter_file
from ..stream.runner import reconstruct_stream, summary_lines
from ..stream.sources import bag_recording, image_files, video_file
from .infer import add_model_arguments


def add_parser(commands) -> None:
    parser = commands.add_parser("reconstruct", help="reconstruct a sequence of any length in overlapping windows",
                                 description="Stream images, a video or a rosbag2 recording through overlapping "
                                             "windows of keyframes chained into one map (the ROS node's "
                                             "reconstruction, in bounded memory); write points.ply, "
                                             "trajectory.txt (TUM), cameras.json, depth/ and summary.json.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="DIR_GLOB_OR_FILE",
                        help="a directory of images, a glob pattern (quote it) or image files, in natural order")
    source.add_argument("--video", type=Path, metavar="FILE", help="a video file (needs PyAV: pip install av)")
    source.add_argument("--bag", type=Path, metavar="PATH", help="a rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--topic", action="append", default=[], metavar="T",
                        help="image topic of --bag, once per camera (default: the parameter file's image_topics "
                             "if the bag has them, else its only image topic)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced when the run completes)")
    parser.add_argument("--params-file", type=Path, help="the node's parameter file: windows, gates, map, scale "
                        "source (default: config/reconstruct.yaml)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of --images, for their stamps (10)")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    values = read_parameter_file(args.params_file or default_parameter_file())
    if args.images:
        source = image_files(args.images, args.fps)
    elif args.video:
        source = video_file(args.video)
    else:
        source = bag_recording(args.bag, args.topic, values.get("image_topics") or (),
                               values.get("odometry_topic", "") if values.get("scale_source") == "odometry" else "",
                               values.get("depth_topic", "") if values.get("scale_source") == "depth" else "")
    model = {"checkpoint": str(args.checkpoint or ""), "preset": args.preset or ""} \
        if args.checkpoint or args.preset else {}
    settings = StreamSettings.from_parameters({**values, **model, "device": args.device, "precision": args.precision},
                                              cameras=source.cameras)
    settings = dataclasses.replace(settings, path_max_size=0)   # the trajectory file holds every keyframe
    estimator = load_estimator(settings.checkpoint, "" if settings.checkpoint else settings.preset, settings.device,
                               settings.precision)
    print(f"reconstructing {source.description} with {estimator.description} ({estimator.backend}); windows of "
          f"{settings.window_size} keyframes every {settings.window_stride}", file=sys.stderr)
    bar = ProgressBar(sys.stderr)
    recon = reconstruct_stream(source, settings, estimator, args.out, progress=bar.update)
    bar.close()
    print("\n".join(summary_lines(recon, bar.seconds, args.out)))
    return 0


class ProgressBar:
    """One line redrawn in place on a terminal (a line every 10 % otherwise): frames, windows, rate."""

    def __init__(self, stream, width: int = 30):
        self.stream, self.width, self.seconds = stream, width, 0.0
        self._tty, self._shown, self._drawn = stream.isatty(), -1, False

    def update(self, recon, report) -> None:
        self.seconds = report.seconds
        done, total = report.frames_read, report.frames_total
        fraction = done / total if total else None
        if not self._tty:
            step = int(10 * fraction) if fraction is not None else done // 100
            if step == self._shown:
                return
            self._shown = step
        bar = "" if fraction is None else "[" + "#" * round(self.width * fraction) + \
            "." * (self.width - round(self.width * fraction)) + "] "
        rate = done / report.seconds if report.seconds > 0 else 0.0
        line = (f"{bar}{done}{'' if total is None else f'/{total}'} frames, {recon.counts.processed} windows, "
                f"{len(recon.map) if recon.counts.processed else 0} map points, {rate:.1f} frames/s")
        self.stream.write(("\r" + line) if self._tty else line + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._tty and self._drawn:
            self.stream.write("\n")
