"""ament_python package ``vggt_quant_ros`` that also installs with pip (``pip install .[ros]``)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vggt_quant_ros"

ROS_WHEELS = ["ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-sensor-msgs", "ros-geometry-msgs", "ros-nav-msgs",
              "ros-std-msgs", "ros-std-srvs", "ros-visualization-msgs", "ros-diagnostic-msgs"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Quantized VGGT for ROS 2: poses, depth and point clouds from camera streams",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    # JIT-built CUDA and CPU kernel sources, and the trained default model (preset vggt-tiny-synth)
    package_data={"vggt_quant_core.kernels": ["csrc/*.cu", "csrc/*.cpp", "csrc/*.h"],
                  "vggt_quant_core": ["weights/*.safetensors"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    # torch is not pinned here: install the build matching your CUDA first (the Makefile uses 2.13.0 CPU).
    # ninja: torch.utils.cpp_extension builds the CPU AMX kernel with it on first use (kernels/amx_int8.py)
    install_requires=["torch>=2.1", "numpy>=1.24", "safetensors>=0.4", "Pillow>=9.1", "scikit-learn>=1.2",
                      "rosbags>=0.11.9", "scipy>=1.9", "PyYAML>=5.4", "ninja>=1.11"],
    extras_require={
        "ros": ROS_WHEELS,
        "dev": ["pytest>=7", "flake8>=6", "colcon-common-extensions", "fht-cpu", "av>=12",
                "opencv-python-headless"],  # OpenCV: the tests' reference for lens undistortion
        "fast": ["fht-cpu"],  # optional CPU Hadamard kernel (the pure-torch Kronecker path is the default)
        "video": ["av>=12"],  # vggt-quant reconstruct --video (PyAV: FFmpeg's decoders in the wheel)
    },
    zip_safe=False,  # the kernel sources in kernels/csrc are compiled from the installed files
    entry_points={
        "console_scripts": [
            "vggt-quant = vggt_quant_core.cli.main:main",
            "reconstruct = vggt_quant_ros.reconstruct_node:main",
            "calibrate = vggt_quant_ros.calibrate_bags:main",
            "reconstruct-demo = vggt_quant_ros.demo:main",
        ],
    },
)
