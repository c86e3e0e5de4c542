"""vilasr_ros_sim: procedural MuJoCo indoor scenes, RGB-D + segmentation with exact ground truth,
and spatial questions (VSI-Bench task types, navigation, mazes). Installed as ``vilasr_ros_sim``;
MuJoCo is the ``[sim]`` extra, imported where used.
"""
