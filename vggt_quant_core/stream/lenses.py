"""Distorted cameras for a model that assumes pinholes: frames whose CameraInfo has distortion
(``Frame.distortion_model``, ``distortion``) are undistorted to a pinhole of the same K (``rectify: auto``)
before they become model inputs, with one undistortion map per camera model (``geometry.distortion``).

It runs in the window stage, once per frame that reaches the model (frames of dropped windows cost nothing), so
the input stage stays light. A model that cannot be undone, and a distorted camera with ``rectify: off``, are named
through ``warn``; their images are used as they are.
"""

from typing import Dict, Optional

from ..geometry.distortion import Undistorter, UnsupportedDistortion, is_distorted
from .windowing import Frame

RECTIFY_MODES = ("auto", "off")


class Lenses:
    """The undistortion of each camera's current model. Used by one thread (the window stage); others may read
    ``rectified``, which is replaced whole."""

    def __init__(self, warn):
        self._warn = warn
        self._by_camera: Dict[int, Undistorter] = {}
        self.rectified: Dict[int, str] = {}    # camera -> distortion model of each camera being undistorted

    def rectify(self, frame: Frame, mode: str) -> None:
        """Undistort ``frame.rgb`` in place to the pinhole of its K when ``mode`` is auto and its lens is distorted;
        ``frame.lens`` then records the undistortion (a depth image registered to the frame needs it too)."""
        if frame.lens is not None or frame.intrinsics is None \
                or not is_distorted(frame.distortion_model, frame.distortion):
            return
        if mode == "off":
            self._warn(frame.camera, "distortion", f"the CameraInfo has {frame.distortion_model or 'unnamed'} "
                       "distortion and rectify is off: the images are used as pinhole images (bent geometry)")
            return
        lens = self._lens(frame)
        if lens is not None:
            frame.rgb, frame.lens = lens(frame.rgb), lens

    def _lens(self, frame: Frame) -> Optional[Undistorter]:
        height, width = frame.rgb.shape[:2]
        lens = self._by_camera.get(frame.camera)
        if lens is not None and lens.matches(frame.intrinsics, frame.distortion_model, frame.distortion, width,
                                             height):
            return lens
        try:
            lens = self._by_camera[frame.camera] = Undistorter.create(frame.intrinsics, frame.distortion_model,
                                                                      frame.distortion, width, height)
        except UnsupportedDistortion as exc:
            self._by_camera.pop(frame.camera, None)
            lens = None
            self._warn(frame.camera, "distortion", f"{exc}: the images are used unrectified")
        self.rectified = {camera: known.model for camera, known in sorted(self._by_camera.items())}
        return lens
