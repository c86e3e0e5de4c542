"""vilasr_ros: ViLaSR's draw-to-reason spatial reasoning on ROS 2 robots.

The runtime core (protocol, drawing, reasoner, engines, frames, geometry, grounding, scoring) is
ROS-free; ``vilasr_ros.nodes`` holds the thin rclpy adapters.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vilasr_ros")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"
