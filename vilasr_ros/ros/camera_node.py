"""``camera_node``: publish a frame source as a ROS camera driver would.

Topics (defaults follow the realsense-ros wrapper, ``camera_namespace/camera_name`` = ``camera/camera``):
    ``/camera/camera/color/image_raw`` (``sensor_msgs/Image`` rgb8),
    ``/camera/camera/aligned_depth_to_color/image_raw`` (16UC1 mm or 32FC1 m, registered to colour),
    ``/camera/camera/color/camera_info``, and ``/odom`` (``nav_msgs/Odometry``: ``T_world_base`` with
    ``T_world_base = T_world_camera @ inv(T_base_camera)``, only for frames that have a pose).
QoS as realsense-ros publishes (images ``SYSTEM_DEFAULT``: reliable, so RViz and default
subscribers see them; CameraInfo reliable, depth 10); stamps are the node clock at publication;
frame ids are parameters. ``color_transport`` ``jpeg``/``png`` publishes ``sensor_msgs/CompressedImage``
on ``<color_topic>/compressed`` and ``depth_transport`` ``compressedDepth`` on
``<depth_topic>/compressedDepth``, as image_transport's plugins name and encode them.

Parameters: ``source`` (source syntax of :func:`vilasr_ros.sources.open_source`), ``rate_hz``,
``loop`` (restart the source at its end), ``depth_encoding``, topic names, ``color_frame_id``,
``world_frame_id``, ``base_frame_id`` and ``T_base_camera`` (``[x, y, z, qx, qy, qz, qw]`` of the
colour optical frame in the base frame; the default identity with ``base_frame_id`` =
``camera_color_optical_frame`` means the odometry is the camera's own pose), ``wait_for_subscribers``
(hold the first frame until this many colour subscribers, and at least one depth, CameraInfo and
odometry subscriber, are matched; 0 = start at once).

A recorded sequence (a source with ``playback_rate_hz``) is published no faster than that rate, so
consecutive poses imply walking pace, not a teleport. A frame the source cannot read is skipped by the
source (logged); a source that fails outright (a bag corrupted mid-file) ends the playback with one
error line — the process, and an agent sharing it, keep running.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_system_default
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vilasr_ros.ros.conversions import (
    camera_info_msg,
    color_msg,
    compressed_color_msg,
    compressed_depth_msg,
    depth_msg,
    odometry_msg,
    transform_from_xyz_quat,
)

DEFAULTS = {
    "source": "",
    "rate_hz": 30.0,
    "loop": True,
    "depth_encoding": "16UC1",
    "color_transport": "raw",
    "depth_transport": "raw",
    "color_topic": "/camera/camera/color/image_raw",
    "depth_topic": "/camera/camera/aligned_depth_to_color/image_raw",
    "camera_info_topic": "/camera/camera/color/camera_info",
    "odom_topic": "/odom",
    "color_frame_id": "camera_color_optical_frame",
    "world_frame_id": "map",
    "base_frame_id": "camera_color_optical_frame",
    "T_base_camera": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    "wait_for_subscribers": 0,
}


class CameraNode(Node):
    """Publishes frames of one source at ``rate_hz`` (see the module docstring).

    Raises (at construction):
        QueryError / SourceError: Bad ``source``.
        ValueError: Bad ``T_base_camera`` or ``depth_encoding``.
    """

    def __init__(self, node_name: str = "camera_node", **kwargs):
        super().__init__(node_name, **kwargs)
        for name, value in DEFAULTS.items():
            descriptor = ParameterDescriptor(read_only=True)
            if name == "rate_hz":
                descriptor.floating_point_range = [FloatingPointRange(from_value=0.1, to_value=120.0)]
            self.declare_parameter(name, value, descriptor)
        p = {name: self.get_parameter(name).value for name in DEFAULTS}
        if p["depth_encoding"] not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {p['depth_encoding']!r}")
        if p["color_transport"] not in ("raw", "jpeg", "png") or p["depth_transport"] not in ("raw", "compressedDepth"):
            raise ValueError("color_transport must be raw, jpeg or png and depth_transport raw or compressedDepth")
        if not p["source"]:
            raise ValueError("parameter 'source' is required (rgbd_folder:PATH, bag:PATH, realsense[:...], sim:...)")
        self.params = p
        self.T_camera_base = np.linalg.inv(transform_from_xyz_quat(p["T_base_camera"]))

        from vilasr_ros.sources import open_source

        self.source = open_source(p["source"])
        self._frames = iter(self.source)
        self.published = 0
        self.error: str | None = None
        self._t0: float | None = None
        rate = p["rate_hz"]
        limit = getattr(self.source, "playback_rate_hz", None)
        if limit is not None and limit < rate:
            self.get_logger().info(f"{p['source']} is a recorded sequence: published at {limit:.1f} Hz (not "
                                   f"{rate:.1f}) so its poses move at walking pace")
            rate = limit
        images = qos_profile_system_default  # realsense-ros: image_qos SYSTEM_DEFAULT, info DEFAULT (reliable, 10)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if p["color_transport"] == "raw":
            self.color_pub = self.create_publisher(Image, p["color_topic"], images)
        else:
            self.color_pub = self.create_publisher(CompressedImage, p["color_topic"].rstrip("/") + "/compressed", images)
        if p["depth_transport"] == "raw":
            self.depth_pub = self.create_publisher(Image, p["depth_topic"], images)
        else:
            self.depth_pub = self.create_publisher(CompressedImage, p["depth_topic"].rstrip("/") + "/compressedDepth",
                                                   images)
        self.info_pub = self.create_publisher(CameraInfo, p["camera_info_topic"], reliable)
        self.odom_pub = self.create_publisher(Odometry, p["odom_topic"], reliable)
        self._done = threading.Event()
        self.timer = self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"publishing {p['source']} at {rate:.1f} Hz on {p['color_topic']}")

    @property
    def finished(self) -> threading.Event:
        """Set when a non-looping source has been published to its end."""
        return self._done

    def _next_frame(self):
        try:
            try:
                return next(self._frames)
            except StopIteration:
                if not self.params["loop"]:
                    return None
                self._frames = iter(self.source)
                return next(self._frames, None)
        except Exception as exc:  # noqa: BLE001 - a source that fails ends playback, not the process
            self.error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"source {self.params['source']} failed after {self.published} frames: "
                                    f"{self.error}; playback stopped")
            return None

    def _consumers_matched(self) -> bool:
        n = self.params["wait_for_subscribers"]
        if n <= 0:
            return True
        others = (self.depth_pub, self.info_pub, self.odom_pub)
        return self.color_pub.get_subscription_count() >= n and all(p.get_subscription_count() >= 1 for p in others)

    def _tick(self) -> None:
        try:
            self._publish_next()
        except Exception as exc:  # noqa: BLE001 - one bad frame (encoding, size) is skipped, logged
            self.get_logger().error(f"frame {self.published} not published: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=5.0)

    def _publish_next(self) -> None:
        if self.published == 0 and not self._consumers_matched():
            return  # hold the first frame until the consumers are matched
        frame = self._next_frame()
        if frame is None:
            if not self._done.is_set():
                self.get_logger().info(f"source finished after {self.published} frames")
                self._done.set()
                self.timer.cancel()
            return
        p = self.params
        stamp = self.get_clock().now().to_msg()
        if frame.T_world_camera is not None:
            self.odom_pub.publish(odometry_msg(frame.T_world_camera @ self.T_camera_base, stamp,
                                               p["world_frame_id"], p["base_frame_id"]))
        self.info_pub.publish(camera_info_msg(frame.intrinsics, stamp, p["color_frame_id"]))
        if frame.depth_m is not None:
            if p["depth_transport"] == "raw":
                self.depth_pub.publish(depth_msg(frame.depth_m, stamp, p["color_frame_id"], p["depth_encoding"]))
            else:
                self.depth_pub.publish(compressed_depth_msg(frame.depth_m, stamp, p["color_frame_id"]))
        if p["color_transport"] == "raw":
            self.color_pub.publish(color_msg(frame.rgb, stamp, p["color_frame_id"]))
        else:
            self.color_pub.publish(compressed_color_msg(frame.rgb, stamp, p["color_frame_id"], p["color_transport"]))
        if self._t0 is None:
            self._t0 = time.monotonic()
        self.published += 1

    def destroy_node(self):
        self.timer.cancel()
        if self._t0 is not None and self.published > 1:
            dt = time.monotonic() - self._t0
            self.get_logger().info(f"published {self.published} frames in {dt:.2f} s ({(self.published - 1) / dt:.2f} Hz)")
        self.source.close()
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run vilasr_ros camera_node --ros-args -p source:=rgbd_folder:PATH``."""
    from rclpy.executors import SingleThreadedExecutor

    from vilasr_ros.ros.runner import spin_node

    return spin_node(CameraNode, SingleThreadedExecutor, "camera_node", args)


if __name__ == "__main__":
    sys.exit(main())
