"""The launch file and the install layout, checked without launch_ros (not in the pip ROS wheels)."""

import ast
import subprocess
import sys
import zipfile
from importlib import metadata

import yaml

from conftest import REPO

LAUNCH = REPO / "launch" / "agent.launch.py"


def test_launch_file_parses_and_names_installed_executables_and_the_yaml():
    tree = ast.parse(LAUNCH.read_text())
    names = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in names
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("Node", "LifecycleNode")]
    executables = {kw.value.value for c in calls for kw in c.keywords if kw.arg == "executable"}
    assert executables == {"camera_node", "vilasr_agent"}
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    for exe in executables:  # what `ros2 run` / launch_ros will execute exists and imports
        module, _, func = scripts[exe].partition(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))
    node_names = {kw.value.value for c in calls for kw in c.keywords if kw.arg == "name"}
    params = yaml.safe_load((REPO / "config" / "agent.yaml").read_text())
    assert node_names == set(params)  # the YAML sections apply to the launched nodes by name
    assert '"config", "agent.yaml"' in LAUNCH.read_text()
    lifecycle = [c for c in calls if c.func.id == "LifecycleNode"]
    assert [kw.value.value for c in lifecycle for kw in c.keywords if kw.arg == "executable"] == ["vilasr_agent"]


def test_rviz_config_shows_what_the_nodes_publish_in_map():
    """config/vilasr.rviz: YAML, fixed frame map, and every topic it names is one the nodes publish."""
    rviz = yaml.safe_load((REPO / "config" / "vilasr.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"

    def topics(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Topic" and isinstance(value, dict) and "Value" in value:
                    yield value["Value"]
                else:
                    yield from topics(value)
        elif isinstance(node, list):
            for item in node:
                yield from topics(item)

    named = set(topics(manager["Displays"]))
    published = {"/camera/camera/color/image_raw", "/vilasr_agent/annotated_image", "/vilasr_agent/markers",
                 "/vilasr_agent/target_pose", "/vilasr_agent/path", "/goal_pose"}
    assert named and named <= published, named - published
    assert {"/vilasr_agent/markers", "/vilasr_agent/target_pose", "/vilasr_agent/path",
            "/vilasr_agent/annotated_image", "/camera/camera/color/image_raw"} <= named


def test_wheel_installs_launch_config_and_ament_marker_under_share(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("vilasr_ros-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in files if "/data/share/" in n) + "/data/share/"
    for path in ("vilasr_ros/launch/agent.launch.py", "vilasr_ros/config/agent.yaml", "vilasr_ros/config/vilasr.rviz",
                 "vilasr_ros/config/fastdds_loopback.xml", "vilasr_ros/package.xml",
                 "ament_index/resource_index/packages/vilasr_ros"):
        assert data + path in files, path
    assert "vilasr_ros/resources/demo_responses.json" in files
