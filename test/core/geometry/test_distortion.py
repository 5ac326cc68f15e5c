"""Lens undistortion against OpenCV (a test-only, independent implementation) for each ROS distortion model."""

import numpy as np
import pytest

from vggt_quant_core.data import generate_sequence
from vggt_quant_core.geometry.distortion import (UnsupportedDistortion, Undistorter, is_distorted, remap_bilinear,
                                                 undistortion_map)

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the [dev] extra) is the reference")

WIDTH, HEIGHT = 160, 120
K = np.array([[95.0, 0.0, 81.5], [0.0, 93.0, 58.0], [0.0, 0.0, 1.0]])
CAMERAS = {  # a real-looking lens of each model
    "plumb_bob": [-0.28, 0.09, 0.001, -0.0015, -0.012],
    "rational_polynomial": [0.6, -0.1, 0.0008, -0.0012, 0.02, 0.95, 0.05, 0.01],
    "equidistant": [-0.03, 0.004, -0.002, 0.0005],
}


def _opencv_maps(model, distortion):
    if model == "equidistant":
        return cv2.fisheye.initUndistortRectifyMap(K, np.array(distortion), np.eye(3), K, (WIDTH, HEIGHT),
                                                   cv2.CV_32FC1)
    return cv2.initUndistortRectifyMap(K, np.array(distortion), np.eye(3), K, (WIDTH, HEIGHT), cv2.CV_32FC1)


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_undistortion_map_is_opencvs(model):
    ours = undistortion_map(K, model, CAMERAS[model], WIDTH, HEIGHT)
    theirs = _opencv_maps(model, CAMERAS[model])
    for a, b in zip(ours, theirs):
        assert np.abs(a - b).max() < 2e-3  # pixels; float32 maps


def test_bilinear_remap_is_opencvs_inside_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    map_x = rng.uniform(-5, WIDTH + 5, size=(50, 70)).astype(np.float32)
    map_y = rng.uniform(-5, HEIGHT + 5, size=(50, 70)).astype(np.float32)
    ours = remap_bilinear(image, map_x, map_y)
    theirs = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = (map_x >= 0) & (map_y >= 0) & (map_x <= WIDTH - 1) & (map_y <= HEIGHT - 1)
    # OpenCV weighs with 5-bit fixed-point fractions: a grey level or two apart
    assert np.abs(ours[inside].astype(int) - theirs[inside].astype(int)).max() <= 2
    assert (ours[~inside] == 0).all()
    depth = rng.uniform(0.5, 4.0, size=(HEIGHT, WIDTH)).astype(np.float32)
    assert np.allclose(remap_bilinear(depth, map_x, map_y)[inside],
                       cv2.remap(depth, map_x, map_y, cv2.INTER_LINEAR)[inside], atol=2e-2)


@pytest.fixture(scope="module")
def pinhole():
    return generate_sequence(5, 1, WIDTH, HEIGHT, textures="rich").cameras[0].images[0]


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_undistorting_a_distorted_rendering_gives_the_pinhole_rendering_back(model, pinhole):
    # The distorted picture of the same scene, made with OpenCV: each distorted pixel samples the pinhole image
    # where OpenCV's inverse model puts it.
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    points = np.stack([u.ravel(), v.ravel()], -1)[:, None]
    distortion = np.array(CAMERAS[model])
    if model == "equidistant":
        undistorted = cv2.fisheye.undistortPoints(points, K, distortion, P=K)
    else:
        undistorted = cv2.undistortPoints(points, K, distortion, P=K)
    source = undistorted.reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    distorted = cv2.remap(pinhole, source[..., 0], source[..., 1], cv2.INTER_LINEAR)
    undistorter = Undistorter.create(K, model, CAMERAS[model], WIDTH, HEIGHT)
    recovered = undistorter(distorted)
    map_x, map_y = undistortion_map(K, model, CAMERAS[model], WIDTH, HEIGHT)
    usable = (map_x > 2) & (map_y > 2) & (map_x < WIDTH - 3) & (map_y < HEIGHT - 3)
    usable[:4], usable[-4:], usable[:, :4], usable[:, -4:] = False, False, False, False
    error = np.abs(recovered.astype(float) - pinhole.astype(float)).mean(-1)[usable].mean()
    untouched = np.abs(distorted.astype(float) - pinhole.astype(float)).mean(-1)[usable].mean()
    assert usable.mean() > 0.6 and error < 0.3 * untouched and error < 8.0  # two interpolations' blur


def test_pinholes_and_unknown_models_are_named():
    assert not is_distorted("plumb_bob", [0.0] * 5) and not is_distorted("", [])
    assert is_distorted("equidistant", CAMERAS["equidistant"])
    # f-theta with D = 0 is still a fisheye: the map moves pixels
    assert is_distorted("equidistant", [0.0] * 4)
    assert undistortion_map(K, "equidistant", [0.0] * 4, WIDTH, HEIGHT)[0][0, 0] > 1.0   # pixel (0, 0) samples x > 1
    with pytest.raises(UnsupportedDistortion, match="'fov' is not supported"):
        undistortion_map(K, "fov", [0.9], WIDTH, HEIGHT)
    with pytest.raises(UnsupportedDistortion, match="plumb_bob takes 5 coefficients"):
        undistortion_map(K, "plumb_bob", [0.1, 0, 0, 0, 0, 0.2], WIDTH, HEIGHT)
    # Trailing zeros (a 14-element D of a rational_polynomial driver) are fine.
    undistortion_map(K, "rational_polynomial", CAMERAS["rational_polynomial"] + [0.0] * 6, WIDTH, HEIGHT)
    undistorter = Undistorter.create(K, "plumb_bob", CAMERAS["plumb_bob"], WIDTH, HEIGHT)
    assert undistorter.matches(K, "plumb_bob", CAMERAS["plumb_bob"], WIDTH, HEIGHT)
    assert not undistorter.matches(K * 1.01, "plumb_bob", CAMERAS["plumb_bob"], WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="image is 80x60, the camera model 160x120"):
        undistorter(np.zeros((60, 80, 3), np.uint8))
