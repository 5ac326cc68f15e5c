"""What the console scripts (``vggt-quant`` and the ROS package's) share without importing one another: the
model and demo arguments, options from parsed arguments, and how every script ends: bad input in one line
(exit 2), Ctrl-C in one line (exit 130)."""

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional, Type, TypeVar

from .data import HELD_OUT_SEED_BASE, TRAJECTORIES
from .data.bags import STORAGES
from .inference import PRECISIONS
from .model import CheckpointError
from .presets import DEFAULT_PRESET, PRESETS
from .stream.metric_scale import SCALE_SOURCES

T = TypeVar("T")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="weights file or directory (e.g. VGGT-1B model.pt)")
    source.add_argument("--preset", choices=sorted(PRESETS), help=f"named model (default: {DEFAULT_PRESET})")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                        help="autocast precision of the aggregator; heads always run in float32 "
                             "(auto: bf16/fp16 on CUDA, fp32 on CPU)")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demos' arguments (``demo.DemoOptions``): the recording, the node's parameter file, the model."""
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory")
    parser.add_argument("--frames", type=int, default=16, help="frames in the recording (default 16: three windows "
                        "of 8 keyframes every 4 with config/reconstruct.yaml)")
    parser.add_argument("--width", type=int, help="recording width (default: the model's input width)")
    parser.add_argument("--height", type=int, help="recording height (default: 3/4 of the width)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 7, help="scene seed (default: held out)")
    parser.add_argument("--trajectory", default="orbit", choices=sorted(TRAJECTORIES))
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--params-file", type=Path, help="the node's parameters (default: config/reconstruct.yaml)")
    parser.add_argument("--scale-source", choices=SCALE_SOURCES,
                        help="what puts the map in metres; the recording gains it: 'stereo' (a second camera, "
                             "cam1, and its CameraInfo baseline), 'odometry' (/odom, the true camera positions), "
                             "'depth' (/cam0/depth/image_raw, the true depth in mm); default: the parameter "
                             "file's scale_source (none)")
    add_model_arguments(parser)


def options_from(args: argparse.Namespace, options: Type[T]) -> T:
    """The typed options ``options`` (a dataclass) from parsed arguments of the same names."""
    return options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options) if hasattr(args, f.name)})


def run_reporting_errors(prog: str, verbose: bool, body: Callable[[], Optional[int]],
                         interrupted: str = "interrupted (files are written atomically: none is half-written)") -> int:
    """Run a command: bad input is reported in one line (exit 2), a traceback only with ``verbose``;
    Ctrl-C exits 130 with ``interrupted``."""
    try:
        return body() or 0
    except (CheckpointError, ValueError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
