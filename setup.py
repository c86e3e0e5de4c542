"""ament_python / pip build of vilasr_ros (version read from package.xml)."""

import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
PACKAGE = "vilasr_ros"
VERSION = ET.parse(HERE / "package.xml").getroot().findtext("version")

# What each command needs beyond the core (package.xml declares the same for rosdep; a test keeps them in step).
ROS_JAZZY = {"rclpy": "7.1.6", "rmw-fastrtps-cpp": "8.4.3", "std-msgs": "5.3.6", "std-srvs": "5.3.6",
             "sensor-msgs": "5.3.6", "geometry-msgs": "5.3.6", "nav-msgs": "5.3.6", "visualization-msgs": "5.3.6",
             "diagnostic-msgs": "5.3.6", "lifecycle-msgs": "2.0.3"}
EXTRAS = {
    # vilasr ask/agent/eval --engine transformers (the core already has transformers for smart_resize)
    "transformers": ["torch>=2.4", "accelerate>=1.0"],
    "openai": ["openai>=2.0"],                      # --engine openai (the official SDK)
    "vllm": ["vllm>=0.8"],                          # --engine vllm (GPU)
    "sim": ["mujoco>=3.2"],                         # vilasr sim generate, sim:seed=N sources
    "eval": ["matplotlib>=3.7"],                    # vilasr eval report
    "train": ["torch>=2.4", "accelerate>=1.0", "trl>=1.16,<1.17", "peft>=0.17", "datasets>=3.0", "tensorboard"],
    "realsense": ["pyrealsense2>=2.55"],            # realsense sources
    # grounding targets (ask --target, the agent): open3d point clouds, planes, DBSCAN; OpenCV for
    # distorted intrinsics. open3d-cpu is the small CPU build (x86-64 Linux only); elsewhere open3d.
    "geometry": ["open3d-cpu>=0.19; platform_system == 'Linux' and platform_machine == 'x86_64'",
                 "open3d>=0.19; platform_system != 'Linux' or platform_machine != 'x86_64'",
                 "opencv-python-headless>=4.8"],
    "rerun": ["rerun-sdk>=0.41"],                   # vilasr view --rerun
    "bags": ["rosbags>=0.10", "mcap>=1.2"],         # bag: sources, vilasr train site
    "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"],  # vilasr serve
    "remote": ["requests>=2.28"],                   # --engine remote (a robot using a vilasr serve)
    "test": ["pytest>=8", "pytest-xdist>=3.5", "filelock>=3.12", "hypothesis>=6.100", "requests>=2.28", "fastapi>=0.110", "uvicorn>=0.29",
             "python-multipart>=0.0.9"],
    # ROS 2 Jazzy from PyPI wheels, pinned to Jazzy (unpinned names resolve to newer distributions);
    # with apt/colcon ROS (/opt/ros/jazzy) skip this extra.
    "ros": [f"ros-jazzy-{name}=={version}" for name, version in ROS_JAZZY.items()],
}
EXTRAS["ros"] += EXTRAS["geometry"]  # the agent grounds targets
# Everything CI and `make setup` install on a CPU machine (not vllm: GPU).
EXTRAS["all-cpu"] = sorted({d for k, deps in EXTRAS.items() if k != "vllm" for d in deps})

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
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/training", glob("config/training/*.yaml")),
        (f"share/{PACKAGE}/config/training/smoke", glob("config/training/smoke/*.yaml")),
        (f"share/{PACKAGE}/config/accelerate", glob("config/accelerate/*.yaml")),
    ],
    python_requires=">=3.10",
    # The core: arrays, images, poses, YAML, progress bars, and transformers for Qwen2.5-VL's
    # smart_resize (imported lazily, no torch needed).
    install_requires=["numpy>=1.24", "pillow>=10.0", "scipy>=1.10", "pyyaml>=6.0", "tqdm>=4.60",
                      "transformers>=4.57", "huggingface_hub>=0.30"],
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
