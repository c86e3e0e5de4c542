"""``vilasr_agent``: the reasoning node — camera topics in, answers and Nav2 goals out.

Subscribes (sensor-data QoS; names are parameters, defaults follow realsense-ros): colour
``Image``, aligned depth ``Image``, ``CameraInfo`` and ``nav_msgs/Odometry``; pairs them into
frames (:mod:`vilasr_ros.ros.sync`) and fills a :class:`~vilasr_ros.buffer.FrameBuffer`.

Serves ``~/query`` (``std_msgs/String`` JSON, see :mod:`vilasr_ros.agent`) and publishes
``~/answer`` (String JSON), ``~/target_pose`` and, when ``publish_goal_pose`` is true,
``/goal_pose`` (``PoseStamped`` in the world frame — what Nav2's ``bt_navigator`` follows),
``~/path`` (``nav_msgs/Path`` along Path Tracer lines), ``~/annotated_image`` (each drawn image as
it is made), ``~/markers`` (``MarkerArray``) and ``~/progress`` (String JSON per turn).
Services: ``~/cancel`` and ``~/clear_buffer`` (``std_srvs/Trigger``).

Threading: sensor callbacks share one mutually exclusive group; query intake and services
another; the reasoner runs in a third (a guard condition, triggered by the intake, that takes
queries off a bounded queue), all on a
``MultiThreadedExecutor`` — a long query never stalls image callbacks. A full queue, a bad query,
an empty or stale buffer or a failing engine each produce an ``~/answer`` with ``error`` set and the
request ``id``; the node keeps serving.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vilasr_ros.agent import AgentConfig, Answer, BadQueryError, Query, SpatialAgent, parse_query
from vilasr_ros.buffer import BufferConfig, EmptyBufferError, FrameBuffer
from vilasr_ros.grounding import GroundingConfig
from vilasr_ros.ros.conversions import (
    camera_info_to_intrinsics,
    color_msg,
    decode_color_msg,
    decode_depth_msg,
    markers_msg,
    path_msg,
    pose_stamped,
    pose_to_matrix,
    stamp_to_s,
    transform_from_xyz_quat,
)
from vilasr_ros.ros.sync import FrameAssembler


def _f(lo: float, hi: float) -> dict:
    return {"floating_point_range": [FloatingPointRange(from_value=float(lo), to_value=float(hi))]}


def _i(lo: int, hi: int) -> dict:
    return {"integer_range": [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]}


# name: (default, description, descriptor extras, dynamic?) — config/agent.yaml holds the same defaults.
PARAMETERS: dict[str, tuple[Any, str, dict, bool]] = {
    # topics and frames
    "color_topic": ("/camera/camera/color/image_raw", "sensor_msgs/Image colour topic", {}, False),
    "depth_topic": ("/camera/camera/aligned_depth_to_color/image_raw", "depth registered to colour (16UC1 mm / 32FC1 m)", {}, False),
    "camera_info_topic": ("/camera/camera/color/camera_info", "CameraInfo of the colour camera", {}, False),
    "odom_topic": ("/odom", "nav_msgs/Odometry: T_world_base", {}, False),
    "T_base_camera": ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "[x y z qx qy qz qw] of the colour optical frame in the odometry child frame", {}, False),
    "world_frame_id": ("", "world frame of targets; empty = the odometry's header.frame_id", {}, False),
    "expect_depth": (True, "wait for a depth image per colour image", {}, False),
    "sync_tolerance_s": (0.02, "max colour/depth stamp difference (s)", _f(0.0, 1.0), False),
    "pose_tolerance_s": (0.1, "max colour/odometry stamp difference (s)", _f(0.0, 5.0), False),
    # keyframe buffer
    "buffer.max_frames": (256, "keyframes kept at most", _i(1, 100000), False),
    "buffer.max_bytes_mb": (512, "RGB-D bytes kept at most (MiB)", _i(1, 1 << 20), False),
    "buffer.min_translation_m": (0.1, "keyframe when the camera moved more than this (m)", _f(0.0, 100.0), False),
    "buffer.min_rotation_deg": (10.0, "...or turned more than this (deg)", _f(0.0, 360.0), False),
    "buffer.max_interval_s": (1.0, "...or this much time passed (s)", _f(0.0, 3600.0), False),
    # queries
    "frames": (16, "frames per query (VSI-Bench protocol: 16)", _i(1, 64), True),
    "selection": ("uniform", "frame selection: uniform | latest | coverage", {}, True),
    "window_s": (0.0, "only keyframes this recent (s); 0 = whole buffer", _f(0.0, 86400.0), True),
    "max_age_s": (5.0, "refuse queries when the newest frame is older (s); 0 = never", _f(0.0, 86400.0), True),
    "max_queued_queries": (8, "queries waiting at most; more are answered with an error", _i(1, 1000), False),
    "max_query_bytes": (4096, "largest accepted query JSON (bytes)", _i(64, 1 << 20), True),
    "trace_root": ("runs/agent", "folder for per-query traces; empty = do not save", {}, True),
    "publish_goal_pose": (False, "also publish targets on /goal_pose for Nav2", {}, True),
    "standoff_m": (0.8, "approach distance from the target (m)", _f(0.0, 10.0), True),
    "floor_z_m": (0.0, "floor height in the world frame (m, z up)", _f(-100.0, 100.0), True),
    "remove_floor": (False, "drop floor and background-wall pixels in the box before placing the target "
                     "(needs a z-up world frame with the floor at floor_z_m, as REP-103 map/odom)", {}, True),
    # engine (read-only: restart the node to change)
    "engine": ("transformers", "replay | transformers | openai | vllm", {}, False),
    "model": ("", "model folder or HF id (empty: AntResearchNLP/ViLaSR)", {}, False),
    "base_url": ("", "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1", {}, False),
    "api_key_env": ("OPENAI_API_KEY", "environment variable holding the API key", {}, False),
    "responses": ("", "replay engine: JSON list of model turns", {}, False),
    "request_timeout_s": (300.0, "openai engine: HTTP timeout per call (s)", _f(1.0, 3600.0), False),
    "device": ("", "transformers engine: cuda | cpu (empty: cuda when available)", {}, False),
    "max_pixels": (351232, "smart_resize area cap per input image", _i(3136, 16777216), False),
    "max_turns": (10, "model calls per query", _i(1, 100), False),
    "temperature": (0.75, "sampling temperature (0 = greedy)", _f(0.0, 5.0), False),
    "top_p": (0.9, "nucleus sampling", _f(0.0, 1.0), False),
    "max_tokens": (16384, "new tokens per model call", _i(1, 1 << 20), False),
}
CHOICES = {"selection": ("uniform", "latest", "coverage"), "engine": ("replay", "transformers", "openai", "vllm")}


def _reliable(depth: int) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class VilasrAgentNode(Node):
    """The reasoning node (see the module docstring).

    Args:
        reasoner: An already built :class:`~vilasr_ros.reasoner.Reasoner` (tests, ``vilasr agent``);
            None builds one from the engine parameters.

    Raises (at construction):
        QueryError / ModelNotFoundError / MissingDependencyError: The engine cannot be built.
        ValueError: A parameter value outside its choices.
    """

    def __init__(self, node_name: str = "vilasr_agent", *, reasoner=None, **kwargs):
        super().__init__(node_name, **kwargs)
        for name, (default, text, extra, dynamic) in PARAMETERS.items():
            if name in CHOICES:
                text += f" (one of {', '.join(CHOICES[name])})"
            self.declare_parameter(name, default, ParameterDescriptor(description=text, read_only=not dynamic, **extra))
        p = self.p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, choices in CHOICES.items():
            if p[name] not in choices:
                raise ValueError(f"parameter {name}={p[name]!r} is not one of {choices}")

        self.buffer = FrameBuffer(BufferConfig(
            max_frames=p["buffer.max_frames"], max_bytes=p["buffer.max_bytes_mb"] * 2**20,
            min_translation_m=p["buffer.min_translation_m"], min_rotation_deg=p["buffer.min_rotation_deg"],
            max_interval_s=p["buffer.max_interval_s"]))
        self.reasoner = reasoner or self._build_reasoner()
        self.agent = SpatialAgent(self.reasoner, self.buffer, self._agent_config())
        self.assembler = FrameAssembler(
            decode_color_msg, decode_depth_msg, T_base_camera=transform_from_xyz_quat(p["T_base_camera"]),
            tolerance_s=p["sync_tolerance_s"], pose_tolerance_s=p["pose_tolerance_s"],
            expect_depth=p["expect_depth"], world_frame_id=p["world_frame_id"] or None, source_id="ros:" + p["color_topic"],
            keep=self.buffer.wants, on_skip=self.buffer.note)  # only keyframes are decoded
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.control_group = MutuallyExclusiveCallbackGroup()
        self.reasoning_group = MutuallyExclusiveCallbackGroup()
        # No default QoS-event waitables on the hot paths: every waitable is scanned by the Python
        # executor on every wake-up (120 sensor messages/s); best-effort subscriptions and reliable
        # publishers cannot be QoS-incompatible anyway. ~/query keeps its incompatibility warning.
        quiet_sub = SubscriptionEventCallbacks(use_default_callbacks=False)
        quiet_pub = {"event_callbacks": PublisherEventCallbacks(use_default_callbacks=False)}
        sensor = {"qos_profile": qos_profile_sensor_data, "callback_group": self.sensor_group,
                  "event_callbacks": quiet_sub}
        self.create_subscription(Image, p["color_topic"], self._on_colour, **sensor)
        self.create_subscription(Image, p["depth_topic"], self._on_depth, **sensor)
        self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_info, **sensor)
        self.create_subscription(Odometry, p["odom_topic"], self._on_odom, **sensor)
        self.create_subscription(String, "~/query", self._on_query, _reliable(200), callback_group=self.control_group)
        self.create_service(Trigger, "~/cancel", self._on_cancel, callback_group=self.control_group)
        self.create_service(Trigger, "~/clear_buffer", self._on_clear, callback_group=self.control_group)

        self.answer_pub = self.create_publisher(String, "~/answer", _reliable(200), **quiet_pub)
        self.progress_pub = self.create_publisher(String, "~/progress", _reliable(50), **quiet_pub)
        self.target_pub = self.create_publisher(PoseStamped, "~/target_pose", _reliable(10), **quiet_pub)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal_pose", _reliable(10), **quiet_pub)
        self.path_pub = self.create_publisher(Path, "~/path", _reliable(10), **quiet_pub)
        self.image_pub = self.create_publisher(Image, "~/annotated_image", _reliable(20), **quiet_pub)
        self.marker_pub = self.create_publisher(MarkerArray, "~/markers", _reliable(10), **quiet_pub)

        self.queries: queue.Queue[Query] = queue.Queue(maxsize=p["max_queued_queries"])
        self._cancel = threading.Event()
        self._current: Query | None = None
        self.answered = 0
        # Event-driven worker: the intake triggers this guard condition (no polling timer).
        self._wake = self.create_guard_condition(self._work, callback_group=self.reasoning_group)
        engine = self.reasoner.engine.describe()
        self.get_logger().info(
            f"ready: engine {engine.get('engine')} ({engine.get('model', 'scripted')}), colour {p['color_topic']}")

    # ------------------------------------------------------------------ configuration

    def _build_reasoner(self):
        from vilasr_ros.engines import SamplingConfig, create_engine
        from vilasr_ros.reasoner import Reasoner, ReasonerConfig

        p = self.p
        options: dict[str, Any] = {"model": p["model"] or None, "responses": p["responses"] or None}
        if p["engine"] == "openai":
            options.update(base_url=p["base_url"] or None, api_key_env=p["api_key_env"], timeout_s=p["request_timeout_s"])
        if p["engine"] == "transformers" and p["device"]:
            options["device"] = p["device"]
        engine = create_engine(p["engine"], **options)
        sampling = SamplingConfig(temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"])
        return Reasoner(engine, ReasonerConfig(max_pixels=p["max_pixels"], max_turns=p["max_turns"], sampling=sampling))

    def _agent_config(self) -> AgentConfig:
        p = self.p
        return AgentConfig(
            frames=p["frames"], selection=p["selection"], window_s=p["window_s"] or None,
            max_age_s=p["max_age_s"] or None, trace_root=p["trace_root"] or None,
            grounding=GroundingConfig(standoff_m=p["standoff_m"], floor_z_m=p["floor_z_m"],
                                      remove_floor=p["remove_floor"]))

    def _on_set_parameters(self, params) -> SetParametersResult:
        new = dict(self.p)
        for param in params:
            if param.name in CHOICES and param.value not in CHOICES[param.name]:
                return SetParametersResult(successful=False, reason=f"{param.name} must be one of {CHOICES[param.name]}")
            new[param.name] = param.value
        old, self.p = self.p, new
        try:
            self.agent.config = self._agent_config()
        except ValueError as exc:
            self.p = old
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ sensors

    def _add_frames(self, frames) -> None:
        for frame in frames:
            self.buffer.add(frame)

    def _on_colour(self, msg: Image) -> None:
        self._add_frames(self.assembler.add_colour(stamp_to_s(msg.header.stamp), msg, msg.header.frame_id))

    def _on_depth(self, msg: Image) -> None:
        self._add_frames(self.assembler.add_depth(stamp_to_s(msg.header.stamp), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self.assembler.add_camera_info(camera_info_to_intrinsics(msg))
        except ValueError as exc:
            self.get_logger().warning(f"ignoring CameraInfo: {exc}", throttle_duration_sec=5.0)

    def _on_odom(self, msg: Odometry) -> None:
        try:
            T = pose_to_matrix(msg.pose.pose)
        except ValueError as exc:
            self.get_logger().warning(f"ignoring odometry: {exc}", throttle_duration_sec=5.0)
            return
        self._add_frames(self.assembler.add_pose(stamp_to_s(msg.header.stamp), T, msg.header.frame_id))

    # ------------------------------------------------------------------ queries

    def _publish_answer(self, answer: Answer) -> None:
        self.answer_pub.publish(String(data=answer.to_json()))
        self.answered += 1

    def _on_query(self, msg: String) -> None:
        try:
            query = parse_query(msg.data, max_bytes=self.p["max_query_bytes"])
        except BadQueryError as exc:
            self.get_logger().warning(f"bad query {exc.query_id!r}: {exc}")
            self._publish_answer(Answer.failure(exc.query_id, f"bad query: {exc}"))
            return
        try:
            self.queries.put_nowait(query)
            self._wake.trigger()
        except queue.Full:
            self._publish_answer(Answer.failure(
                query.id, f"query queue full ({self.queries.maxsize} waiting); retry later", finish_reason="rejected"))

    def _on_cancel(self, request, response):
        current = self._current
        if current is None:
            response.success, response.message = False, "no query is running"
        else:
            self._cancel.set()
            response.success, response.message = True, f"cancelling query {current.id!r} after its current turn"
        return response

    def _on_clear(self, request, response):
        n = len(self.buffer)
        self.buffer.clear()
        self.assembler.reset()
        response.success, response.message = True, f"cleared {n} keyframes"
        return response

    def _work(self) -> None:
        while True:
            try:
                query = self.queries.get_nowait()
            except queue.Empty:
                return
            self._serve(query)

    def _serve(self, query: Query) -> None:
        self._current = query
        self._cancel.clear()
        start = time.perf_counter()

        def on_turn(trace, turn):
            stamp = self.get_clock().now().to_msg()
            for k in turn.new_images:  # 1-based indices of the images this turn drew
                rgb = np.asarray(trace.pil_images[k - 1].convert("RGB"))
                self.image_pub.publish(color_msg(rgb, stamp, self._optical_frame_id()))
            self.progress_pub.publish(String(data=json.dumps({
                "id": query.id, "turn": len(trace.turns), "boxes": len(turn.boxes), "lines": len(turn.lines),
                "new_images": turn.new_images, "finish_reason": turn.finish_reason, "error": turn.error,
                "elapsed_s": round(time.perf_counter() - start, 3)})))

        try:
            result = self.agent.answer(query, cancel=self._cancel, on_turn=on_turn)
        except Exception as exc:  # never let one query take the node down
            self.get_logger().error(f"query {query.id!r} failed: {exc!r}")
            result = None
            self._publish_answer(Answer.failure(query.id, f"internal error: {exc!r}"))
        finally:
            self._current = None
        if result is None:
            return
        answer, grounding = result.answer, result.grounding
        stamp = self.get_clock().now().to_msg()
        if grounding is not None and grounding.ok:
            pose = pose_stamped(grounding.approach_position, grounding.approach_orientation, grounding.frame_id, stamp)
            self.target_pub.publish(pose)
            if self.p["publish_goal_pose"]:
                self.goal_pub.publish(pose)
            if len(grounding.waypoints) >= 2:
                self.path_pub.publish(path_msg(grounding.waypoints, grounding.frame_id, stamp))
            self.marker_pub.publish(markers_msg(grounding.to_dict(), stamp))
        self._publish_answer(answer)
        self.get_logger().info(
            f"query {query.id!r}: answer {answer.answer!r} ({answer.finish_reason}) in {answer.elapsed_s:.2f} s"
            + (f"; error: {answer.error}" if answer.error else ""))

    def _optical_frame_id(self) -> str:
        """Optical frame id for annotated images (the camera's; images are model-resized)."""
        try:
            return self.buffer.latest().frame_id
        except EmptyBufferError:  # cleared while the query ran
            return "camera_color_optical_frame"

    def destroy_node(self):
        self.agent.close()
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run vilasr_ros vilasr_agent --ros-args --params-file config/agent.yaml``."""
    from rclpy.executors import MultiThreadedExecutor

    from vilasr_ros.ros.runner import spin_node

    return spin_node(VilasrAgentNode, lambda: MultiThreadedExecutor(num_threads=4), "vilasr_agent", args)


if __name__ == "__main__":
    sys.exit(main())
