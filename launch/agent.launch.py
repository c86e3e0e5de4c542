"""Start camera_node and vilasr_agent (a managed lifecycle node) with config/agent.yaml.

    ros2 launch vilasr_ros agent.launch.py source:=realsense engine:=transformers
    ros2 launch vilasr_ros agent.launch.py source:=bag:/data/run1 engine:=openai base_url:=http://gpu:8000/v1
    ros2 launch vilasr_ros agent.launch.py camera:=false map_pose_topic:=/amcl_pose   # a Nav2 robot's own camera
    ros2 launch vilasr_ros agent.launch.py autostart:=false   # a lifecycle manager (Nav2's) brings it up

vilasr_agent is a lifecycle node: with ``autostart`` (the default, as Nav2's lifecycle manager would)
it configures and activates itself; ``ros2 lifecycle set /vilasr_agent deactivate|activate|cleanup``
drive it by hand. Launch arguments override the YAML for the common settings; everything else is in
the YAML (``config:=/path/to/your.yaml`` to use another file).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "vilasr_ros"
# (name, default, description); an empty default keeps the YAML's value.
ARGUMENTS = [
    ("config", os.path.join(get_package_share_directory(PACKAGE), "config", "agent.yaml"), "parameter file"),
    ("camera", "true", "start camera_node (false: use your own camera driver's topics)"),
    ("source", "", "camera_node source: rgbd_folder:PATH | bag:PATH | realsense[:SERIAL|:FILE.db3] | sim:..."),
    ("engine", "", "auto | replay | transformers | openai | vllm | remote"),
    ("model", "", "model folder or Hugging Face id"),
    ("base_url", "", "server URL: OpenAI-compatible or a vilasr serve"),
    ("responses", "", "replay engine: JSON list of model turns"),
    ("publish_goal_pose", "", "true: also publish targets on /goal_pose for Nav2"),
    ("map_pose_topic", "", "map pose of the base (AMCL: /amcl_pose): targets in map"),
    ("color_transport", "", "raw | compressed"),
    ("depth_transport", "", "raw | compressedDepth"),
    ("autostart", "", "true: configure and activate at start; false: a lifecycle manager does"),
]
BOOLEANS = ("publish_goal_pose", "autostart")


def generate_launch_description():
    from launch.actions import OpaqueFunction

    def nodes(context):
        given = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
        config = given("config")
        camera_over = {"source": given("source")} if given("source") else {}
        agent_over = {}
        for name in ("engine", "model", "base_url", "responses", "map_pose_topic", "color_transport", "depth_transport"):
            if given(name):
                agent_over[name] = given(name)
        for name in BOOLEANS:
            if given(name):
                agent_over[name] = given(name).lower() == "true"
        return [
            Node(package=PACKAGE, executable="camera_node", name="camera_node", output="screen",
                 parameters=[config, camera_over], condition=IfCondition(LaunchConfiguration("camera"))),
            LifecycleNode(package=PACKAGE, executable="vilasr_agent", name="vilasr_agent", namespace="",
                          output="screen", parameters=[config, agent_over]),
        ]

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=nodes)]
    )
