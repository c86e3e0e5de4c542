"""ament_python / pip build of vilasr_ros (version read from package.xml)."""

import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
PACKAGE = "vilasr_ros"
VERSION = ET.parse(HERE / "package.xml").getroot().findtext("version")

EXTRAS = {
    "transformers": ["torch>=2.4", "transformers>=4.57", "accelerate>=1.0"],
    "openai": ["openai>=2.0"],
    "vllm": ["vllm>=0.8"],
    "sim": ["mujoco>=3.2"],
    "eval": ["matplotlib>=3.7"],
    "train": ["trl>=1.16,<1.17", "peft>=0.17", "datasets>=3.0", "tensorboard"],
    "realsense": ["pyrealsense2>=2.55"],
    "geometry": ["open3d>=0.18"],
    "bags": ["rosbags>=0.10", "mcap>=1.2"],
    "test": ["pytest>=8", "requests>=2.28", "fastapi", "uvicorn"],
    # ROS 2 Jazzy from PyPI wheels (machines without /opt/ros); with apt/colcon ROS, skip this extra.
    "ros": [f"ros-jazzy-{p}" for p in ("rclpy", "rmw-fastrtps-cpp", "std-msgs", "std-srvs", "sensor-msgs",
                                       "geometry-msgs", "nav-msgs", "visualization-msgs")],
}
EXTRAS["all-cpu"] = sorted({d for k in ("transformers", "openai", "bags", "ros", "realsense", "sim", "eval", "train", "test")
                             for d in EXTRAS[k]})

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["vilasr_ros_training", "vilasr_ros_sim"],
    # Subpackage folders map to their installed names (no dotted mappings: colcon --symlink-install).
    package_dir={"vilasr_ros_training": "training", "vilasr_ros_sim": "sim"},
    package_data={f"{PACKAGE}.resources": ["*.json"],
                  # the bundled demo scene (sim:demo): a rendered room with ground truth
                  "vilasr_ros_sim": ["demo_scene/*.json", "demo_scene/*.xml", "demo_scene/*.log", "demo_scene/*/*.png"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/training", glob("config/training/*.yaml")),
        (f"share/{PACKAGE}/config/training/smoke", glob("config/training/smoke/*.yaml")),
        (f"share/{PACKAGE}/config/accelerate", glob("config/accelerate/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "pillow>=10.0", "scipy>=1.10", "pyyaml>=6.0"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="vilasr_ros developers",
    maintainer_email="dev@vilasr-ros.local",
    description="ViLaSR draw-to-reason spatial reasoning on ROS 2 robots",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vilasr = vilasr_ros.cli:main",
            "camera_node = vilasr_ros.ros.camera_node:main",
            "vilasr_agent = vilasr_ros.ros.agent_node:main",
        ],
        # Plug-ins found by the core at run time (it never imports these packages itself).
        "vilasr_ros.engines": ["teacher = vilasr_ros_training.teacher:TeacherEngine"],
        "vilasr_ros.sources": ["sim = vilasr_ros_sim.source:SimSource"],
        "vilasr_ros.eval_measures": ["sim = vilasr_ros_sim.evaluation:measure_navigation"],
        "vilasr_ros.commands": ["sim = vilasr_ros_sim.cli:register", "train = vilasr_ros_training.cli:register"],
    },
)
