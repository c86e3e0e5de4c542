"""ROS 2 adapters (rclpy): the camera node, the reasoning node, message conversions.

Importing this package does not import rclpy; the node modules do. On a machine shared with
other ROS users, set the loopback environment *before* the first rclpy import
(:func:`vilasr_ros.ros.env.loopback_environment`).
"""
