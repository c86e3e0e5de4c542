"""``vilasr_agent``: the reasoning node — camera topics in, answers and Nav2 goals out.

Subscribes (sensor-data QoS; names are parameters, defaults follow realsense-ros): colour
``Image`` — or image_transport's ``<topic>/compressed`` (jpeg/png) with ``color_transport:
compressed`` —, aligned depth ``Image`` — or ``<topic>/compressedDepth`` —, ``CameraInfo`` and
``nav_msgs/Odometry``; pairs them into frames (:mod:`vilasr_ros.pairing`, the same rule bags use)
and fills a :class:`~vilasr_ros.buffer.FrameBuffer`. With ``map_pose_topic`` (AMCL's
``/amcl_pose``, ``PoseWithCovarianceStamped``; or a SLAM node's ``PoseStamped``) the keyframes,
stored with their odometry poses, are re-expressed in ``map`` when a query selects them
(:class:`~vilasr_ros.pairing.MapAlignment`): targets, paths and markers come out in ``map``.

A managed (lifecycle) node, as Nav2's are: ``configure`` builds the buffer and loads the engine (a
missing model is a failed transition with the reason; the process stays up), ``activate`` subscribes
to the sensors and serves queries, ``deactivate`` stops both and keeps the model (queries are
answered ``rejected``: "inactive"), ``cleanup`` frees the model. ``autostart`` (default true)
configures and activates at start, as a lifecycle manager would.

Serves ``~/query`` (``std_msgs/String`` JSON, see :mod:`vilasr_ros.agent`) and publishes
``~/answer`` (String JSON), ``~/target_pose`` and, when ``publish_goal_pose`` is true,
``/goal_pose`` (``PoseStamped`` in the world frame — what Nav2's ``bt_navigator`` follows),
``~/path`` (``nav_msgs/Path`` along Path Tracer lines), ``~/annotated_image`` (each drawn image as
it is made), ``~/markers`` (``MarkerArray``), ``~/target_points`` (``sensor_msgs/PointCloud2``: the
target's fused points, beside the markers), ``~/progress`` (String JSON per turn) and
``/diagnostics`` (``diagnostic_msgs/DiagnosticArray`` once a second: frames received and dropped by
reason, queue, answers). Services: ``~/cancel`` and ``~/clear_buffer`` (``std_srvs/Trigger``).

Failure behaviour (README "Failure behaviour"): every callback is a boundary — whatever a message
holds, the node logs or answers and keeps spinning. Every query that reaches the node gets exactly
one answer (served, or ``rejected`` with the reason: queue full, shutting down). Goals are published
only under the safety rule of :func:`vilasr_ros.agent.goal_decision`. Parameters that write files
(``trace_root``) or move the robot (``publish_goal_pose``) are read-only at run time: no DDS peer
can redirect the disk or switch goals on.

Threading: sensor callbacks share one mutually exclusive group; query intake and services
another; the reasoner runs in a third (a guard condition, triggered by the intake, that takes
queries off a bounded queue), all on a ``MultiThreadedExecutor`` — a long query never stalls
image callbacks.
"""

from __future__ import annotations

import functools
import json
import queue
import sys
import threading
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vilasr_ros.agent import AgentConfig, Answer, SpatialAgent
from vilasr_ros.protocol import FinishReason
from vilasr_ros.query import SELECTIONS, BadQueryError, Query, parse_query
from vilasr_ros.buffer import BufferConfig, EmptyBufferError, FrameBuffer
from vilasr_ros.grounding import GroundingConfig
from vilasr_ros.health import SensorHealth
from vilasr_ros.messages import decode_color, decode_depth, intrinsics_from_camera_info, pose_from_message, stamp_s
from vilasr_ros.ros.conversions import (
    color_msg,
    markers_msg,
    points_msg,
    path_msg,
    pose_stamped,
    transform_from_xyz_quat,
)
from vilasr_ros.pairing import FrameAssembler, MapAlignment
from vilasr_ros.ros.client import QUERY_QOS_DEPTH, reliable_qos
from vilasr_ros.sanitize import clean_text, redact


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
    "odom_topic": ("/odom", "nav_msgs/Odometry: T_odom_base", {}, False),
    "color_transport": ("raw", "raw (Image) | compressed (image_transport jpeg/png on <color_topic>/compressed)", {}, False),
    "depth_transport": ("raw", "raw (Image) | compressedDepth (on <depth_topic>/compressedDepth)", {}, False),
    "map_pose_topic": ("", "map pose of the base (AMCL: /amcl_pose); empty: targets stay in the odometry frame", {}, False),
    "map_pose_type": ("PoseWithCovarianceStamped", "PoseWithCovarianceStamped (AMCL) | PoseStamped (SLAM)", {}, False),
    "autostart": (True, "configure and activate at start (false: a lifecycle manager drives the node)", {}, False),
    "T_base_camera": ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "[x y z qx qy qz qw] of the colour optical frame in the odometry child frame", {}, False),
    "world_frame_id": ("", "world frame of targets; empty = the odometry's header.frame_id", {}, False),
    "expect_depth": (True, "wait for a depth image per colour image", {}, False),
    "sync_tolerance_s": (0.02, "max colour/depth stamp difference (s)", _f(0.0, 1.0), False),
    "pose_tolerance_s": (0.1, "max colour/odometry stamp difference (s)", _f(0.0, 5.0), False),
    "max_speed_mps": (5.0, "odometry implying a faster motion is rejected as a jump (m/s)", _f(0.01, 1000.0), False),
    "max_future_stamp_s": (2.0, "frames stamped further ahead of the node clock are dropped (s)", _f(0.001, 3600.0), False),
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
    "max_age_s": (5.0, "refuse queries when no usable frame arrived for this long (s); 0 = never", _f(0.0, 86400.0), True),
    "max_queued_queries": (8, "queries waiting at most; more are answered 'rejected'", _i(1, 1000), False),
    "max_query_bytes": (4096, "largest accepted query JSON (bytes)", _i(64, 1 << 20), True),
    "trace_root": ("runs/agent", "folder for per-query traces; empty = do not save (read-only at run time)", {}, False),
    "trace_max_total_mb": (2048.0, "traces kept at most, all together (MiB); oldest removed first", _f(1.0, 1.0e7), False),
    "trace_max_age_h": (168.0, "traces older than this are removed (hours); 0 = size bound only", _f(0.0, 1.0e6), False),
    "publish_goal_pose": (False, "also publish targets on /goal_pose for Nav2 (read-only at run time)", {}, False),
    "min_goal_confidence": (0.3, "grounding confidence needed before a target is published as a goal", _f(0.0, 1.0), True),
    "standoff_m": (0.8, "approach distance from the target (m)", _f(0.0, 10.0), True),
    "floor_z_m": (0.0, "floor height in the world frame (m, z up)", _f(-100.0, 100.0), True),
    "remove_floor": (True, "drop floor and background-wall pixels in the box before placing the target "
                     "(z-up world frame with the floor at floor_z_m, as REP-103 map/odom)", {}, True),
    # engine (read-only: restart the node to change)
    "engine": ("transformers", "auto | replay | transformers | openai | vllm | remote | (installed plug-ins)", {}, False),
    "model": ("", "model folder or HF id (empty: AntResearchNLP/ViLaSR)", {}, False),
    "base_url": ("", "server: OpenAI-compatible (http://gpu:8000/v1) or a vilasr serve", {}, False),
    "api_key_env": ("", "openai: environment variable holding the API key (empty: OPENAI_API_KEY)", {}, False),
    "responses": ("", "replay engine: JSON list of model turns (empty: the shipped demo)", {}, False),
    "request_timeout_s": (300.0, "server engines: wall-clock deadline of one model call (s)", _f(0.1, 3600.0), False),
    "image_format": ("", "server engines: png | jpeg | bmp (empty: png)", {}, False),
    "device": ("", "transformers engine: cuda | cpu (empty: cuda when available)", {}, False),
    "turn_reuse": (True, "transformers engine: reuse KV cache and vision features across turns", {}, False),
    "max_pixels": (351232, "smart_resize area cap per input image", _i(3136, 16777216), False),
    "max_turns": (10, "model calls per query", _i(1, 100), False),
    "temperature": (0.75, "sampling temperature (0 = greedy)", _f(0.0, 5.0), False),
    "top_p": (0.9, "nucleus sampling", _f(0.001, 1.0), False),
    "max_tokens": (16384, "new tokens per model call", _i(1, 1 << 20), False),
}
CHOICES = {"selection": SELECTIONS, "color_transport": ("raw", "compressed"),
           "depth_transport": ("raw", "compressedDepth"), "map_pose_type": ("PoseWithCovarianceStamped", "PoseStamped")}
# Engine parameters → engine options (engines.engine_options checks they apply to the engine chosen).
ENGINE_PARAMETERS = {"model": "model", "base_url": "base_url", "api_key_env": "api_key_env", "responses": "responses",
                     "request_timeout_s": "timeout_s", "image_format": "image_format", "device": "device",
                     "turn_reuse": "turn_reuse"}


def engine_from_parameters(p: dict[str, Any]):
    """Engine name, validated config and a sentence saying which engine answers — from the node's
    parameters, through the same front end as ``vilasr ask`` (nothing is loaded here).

    Raises:
        QueryError: An engine parameter set for an engine that does not take it, or a bad value.
    """
    from vilasr_ros.engines import choose_engine, engine_class, engine_config, engine_options

    name, sentence = choose_engine(p["engine"], model=p["model"] or None, base_url=p["base_url"] or None)
    given = {option: p[param] for param, option in ENGINE_PARAMETERS.items()
             if p[param] not in ("", None) and p[param] != PARAMETERS[param][0]}
    options = engine_options(name, given, {o: f"parameter {k}" for k, o in ENGINE_PARAMETERS.items()})
    if "timeout_s" in engine_class(name).config_class.__dataclass_fields__:
        options.setdefault("timeout_s", p["request_timeout_s"])
    return name, engine_config(name, **options), sentence


class VilasrAgentNode(LifecycleNode):
    """The reasoning node (see the module docstring).

    Args:
        reasoner: An already built :class:`~vilasr_ros.reasoner.Reasoner` (tests, ``vilasr agent``);
            None builds one from the engine parameters when the node is configured.

    Raises (at construction):
        ValueError: A parameter value outside its choices; with ``autostart``, anything that makes
            ``configure`` fail (no weights, a bad engine parameter, the scripted demo engine with
            ``publish_goal_pose``: a scripted answer never drives a robot).
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
        self._given_reasoner = reasoner
        self.reasoner = self.agent = self.buffer = self.assembler = self.alignment = None
        self.health = SensorHealth()
        self.active = False
        self.failure_reason: str | None = None
        self.queries: queue.Queue[Query] = queue.Queue(maxsize=p["max_queued_queries"])
        self._cancel = threading.Event()
        self._current: Query | None = None
        self._closing = False
        self.answered = 0
        self.received_queries = 0
        self.callback_errors = 0
        self._configured: list[tuple[str, Any]] = []  # (kind, entity) made by configure, removed by cleanup
        self._sensor_subs: list = []
        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.control_group = MutuallyExclusiveCallbackGroup()
        self.reasoning_group = MutuallyExclusiveCallbackGroup()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if p["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ValueError(self.failure_reason or "configure failed")
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - a failed transition with the reason, never a crash
            self.failure_reason = clean_text(f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"configure failed: {self.failure_reason}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        self.failure_reason = None
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe_sensors()
        self.active = True
        self.get_logger().info("active: subscribed to the camera and serving queries")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._cancel.set()
        for sub in self._sensor_subs:
            self.destroy_subscription(sub)
        self._sensor_subs = []
        self._reject_waiting("the agent is inactive (deactivated); activate it to serve queries")
        self.get_logger().info("inactive: sensors unsubscribed, queries refused; the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("unconfigured: the model and the buffer are freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = self.p
        self.health = SensorHealth()
        self.buffer = FrameBuffer(
            BufferConfig(max_frames=p["buffer.max_frames"], max_bytes=p["buffer.max_bytes_mb"] * 2**20,
                         min_translation_m=p["buffer.min_translation_m"], min_rotation_deg=p["buffer.min_rotation_deg"],
                         max_interval_s=p["buffer.max_interval_s"], max_future_s=p["max_future_stamp_s"]),
            wall_clock=lambda: self.get_clock().now().nanoseconds * 1e-9, health=self.health)
        self.assembler = FrameAssembler(
            decode_color, decode_depth, T_base_camera=transform_from_xyz_quat(p["T_base_camera"]),
            tolerance_s=p["sync_tolerance_s"], pose_tolerance_s=p["pose_tolerance_s"],
            expect_depth=p["expect_depth"], world_frame_id=p["world_frame_id"] or None, source_id="ros:" + p["color_topic"],
            keep=self.buffer.wants, on_skip=self.buffer.note, health=self.health,  # only keyframes are decoded
            max_speed_mps=p["max_speed_mps"], expect_pose=bool(p["odom_topic"]))
        self.alignment = MapAlignment(self.assembler.odometry_at) if p["map_pose_topic"] else None
        self.reasoner = self._given_reasoner or self._build_reasoner()
        engine = self.reasoner.engine.describe()
        if engine.get("responses") == "shipped demo script" and p["publish_goal_pose"]:
            raise ValueError("publish_goal_pose is true but the engine is the scripted demo (no weights, no "
                             "base_url): a scripted answer never drives a robot; give model or base_url")
        self.agent = SpatialAgent(self.reasoner, self.buffer, self._agent_config(), localization=self.alignment)

        quiet_pub = {"event_callbacks": PublisherEventCallbacks(use_default_callbacks=False)}
        made = self._configured
        made.append(("sub", self.create_subscription(String, "~/query", self._on_query, reliable_qos(QUERY_QOS_DEPTH),
                                                     callback_group=self.control_group)))
        made.append(("srv", self.create_service(Trigger, "~/cancel", self._on_cancel, callback_group=self.control_group)))
        made.append(("sub", self.create_subscription(String, "~/cancel_query", self._on_cancel_query, reliable_qos(100),
                                                     callback_group=self.control_group)))
        made.append(("srv", self.create_service(Trigger, "~/clear_buffer", self._on_clear, callback_group=self.control_group)))
        # Answers go out in every configured state (an inactive node answers "inactive"); the rest only when active.
        self.answer_pub = self.create_publisher(String, "~/answer", reliable_qos(QUERY_QOS_DEPTH), **quiet_pub)
        made.append(("pub", self.answer_pub))
        lifecycle = {
            "progress_pub": (String, "~/progress", 50), "target_pub": (PoseStamped, "~/target_pose", 10),
            "goal_pub": (PoseStamped, "/goal_pose", 10), "path_pub": (Path, "~/path", 10),
            "image_pub": (Image, "~/annotated_image", 20), "marker_pub": (MarkerArray, "~/markers", 10),
            "points_pub": (PointCloud2, "~/target_points", 10),
            "diagnostics_pub": (DiagnosticArray, "/diagnostics", 10)}
        for attr, (kind, topic, depth) in lifecycle.items():
            pub = self.create_lifecycle_publisher(kind, topic, reliable_qos(depth), **quiet_pub)
            setattr(self, attr, pub)
            made.append(("lpub", pub))
        # Event-driven worker: the intake triggers this guard condition (no polling timer).
        self._wake = self.create_guard_condition(self._work, callback_group=self.reasoning_group)
        made.append(("guard", self._wake))
        made.append(("timer", self.create_timer(1.0, self._guard(self._publish_diagnostics, "diagnostics"),
                                                callback_group=self.control_group)))
        made.append(("timer", self.create_timer(0.25, self._guard(self._flush, "flush"), callback_group=self.sensor_group)))
        self._closing = False
        self.get_logger().info(
            f"configured: engine {engine.get('engine')} ({engine.get('model', 'scripted')}), colour {p['color_topic']} "
            f"({p['color_transport']}), goals {'on /goal_pose' if p['publish_goal_pose'] else 'on ~/target_pose only'}, "
            f"targets in {'map via ' + p['map_pose_topic'] if p['map_pose_topic'] else 'the odometry frame'}")

    def _subscribe_sensors(self) -> None:
        p = self.p
        # No default QoS-event waitables on the hot paths: every waitable is scanned by the Python
        # executor on every wake-up (120 sensor messages/s); best-effort subscriptions cannot be
        # QoS-incompatible with a publisher anyway.
        sensor = {"qos_profile": qos_profile_sensor_data, "callback_group": self.sensor_group,
                  "event_callbacks": SubscriptionEventCallbacks(use_default_callbacks=False)}
        colour = (CompressedImage, p["color_topic"].rstrip("/") + "/compressed") if p["color_transport"] == "compressed" \
            else (Image, p["color_topic"])
        depth = (CompressedImage, p["depth_topic"].rstrip("/") + "/compressedDepth") \
            if p["depth_transport"] == "compressedDepth" else (Image, p["depth_topic"])
        subs = [self.create_subscription(*colour, self._guard(self._on_colour, "colour"), **sensor),
                self.create_subscription(*depth, self._guard(self._on_depth, "depth"), **sensor),
                self.create_subscription(CameraInfo, p["camera_info_topic"], self._guard(self._on_info, "camera_info"), **sensor),
                self.create_subscription(Odometry, p["odom_topic"], self._guard(self._on_odom, "odometry"), **sensor)]
        if p["map_pose_topic"]:
            kind = PoseWithCovarianceStamped if p["map_pose_type"] == "PoseWithCovarianceStamped" else PoseStamped
            # AMCL publishes /amcl_pose reliable and transient-local: a reliable subscriber matches it
            subs.append(self.create_subscription(kind, p["map_pose_topic"], self._guard(self._on_map_pose, "map pose"),
                                                 reliable_qos(10), callback_group=self.sensor_group))
        self._sensor_subs = subs

    def _teardown(self) -> None:
        """Undo configure: entities destroyed, the engine closed when this node built it."""
        for sub in self._sensor_subs:
            self.destroy_subscription(sub)
        self._sensor_subs = []
        self._reject_waiting("the agent is being unconfigured")
        for kind, entity in reversed(self._configured):
            try:
                {"sub": self.destroy_subscription, "srv": self.destroy_service, "pub": self.destroy_publisher,
                 "lpub": self.destroy_lifecycle_publisher, "guard": self.destroy_guard_condition,
                 "timer": self.destroy_timer}[kind](entity)
            except Exception as exc:  # noqa: BLE001 - already gone; the rest is still undone
                self.get_logger().debug(f"destroying {kind}: {exc}")
        self._configured = []
        if self.agent is not None:
            self.agent.close()
        if self.reasoner is not None and self._given_reasoner is None:
            try:
                self.reasoner.engine.close()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; the engine is dropped below
                self.get_logger().warning(redact(f"closing the engine failed: {clean_text(str(exc))[:300]}"))
        self.reasoner = self.agent = self.buffer = self.assembler = self.alignment = None

    def _reject_waiting(self, why: str) -> None:
        while True:
            try:
                query = self.queries.get_nowait()
            except queue.Empty:
                return
            try:
                self._publish_answer(Answer.failure(query.id, why, finish_reason=FinishReason.REJECTED))
            except Exception:  # noqa: BLE001 - no publisher any more
                return

    # ------------------------------------------------------------------ configuration

    def _build_reasoner(self):
        from vilasr_ros.engines import create_engine
        from vilasr_ros.reasoner import Reasoner, reasoner_config

        p = self.p
        name, config, sentence = engine_from_parameters(p)
        self.get_logger().info(redact(sentence))
        loop = reasoner_config(max_pixels=p["max_pixels"], max_turns=p["max_turns"], temperature=p["temperature"],
                               top_p=p["top_p"], max_tokens=p["max_tokens"])
        return Reasoner(create_engine(name, config), loop)

    def _agent_config(self) -> AgentConfig:
        p = self.p
        return AgentConfig(
            frames=p["frames"], selection=p["selection"], window_s=p["window_s"] or None,
            max_age_s=p["max_age_s"] or None, trace_root=p["trace_root"] or None,
            trace_max_total_mb=p["trace_max_total_mb"], trace_max_age_h=p["trace_max_age_h"],
            min_goal_confidence=p["min_goal_confidence"],
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
            config = self._agent_config()
            if self.agent is not None:
                self.agent.config = config
        except ValueError as exc:
            self.p = old
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ boundaries

    def _guard(self, callback, what: str):
        """Wrap a callback so no message can raise out of it into the executor (which would stop
        the node): the failure is counted as a dropped message and logged, throttled."""

        @functools.wraps(callback)
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001 - the callback boundary
                self.callback_errors += 1
                reason = f"{what} callback: {type(exc).__name__}: {clean_text(exc)[:300]}"
                self.health.drop("callback", reason)
                self.get_logger().error(reason, throttle_duration_sec=5.0)
                return None

        return guarded

    # ------------------------------------------------------------------ sensors

    def _add_frames(self, frames) -> None:
        for frame in frames:
            self.buffer.add(frame)

    def _on_colour(self, msg: Image) -> None:
        self._add_frames(self.assembler.add_colour(stamp_s(msg.header), msg, msg.header.frame_id))

    def _on_depth(self, msg: Image) -> None:
        self._add_frames(self.assembler.add_depth(stamp_s(msg.header), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            intrinsics = intrinsics_from_camera_info(msg)
        except ValueError as exc:
            self.health.drop("camera_info", f"CameraInfo rejected: {exc}")
            self.get_logger().warning(f"ignoring CameraInfo: {exc}", throttle_duration_sec=5.0)
            return
        self._add_frames(self.assembler.add_camera_info(intrinsics))

    def _on_odom(self, msg: Odometry) -> None:
        try:
            stamp, T, frame = pose_from_message(msg)
        except ValueError as exc:  # MessageError: not finite, zero quaternion
            self.health.drop("odometry", f"odometry rejected: {exc}")
            self.get_logger().warning(f"ignoring odometry: {exc}", throttle_duration_sec=5.0)
            return
        frames = self.assembler.add_pose(stamp, T, frame)
        if self.alignment is not None:
            self.alignment.retry()
        if self.assembler.stats.odometry_rejected and self.health.last_reason and "odometry" in self.health.last_reason:
            self.get_logger().warning(self.health.last_reason, throttle_duration_sec=5.0)
        self._add_frames(frames)

    def _on_map_pose(self, msg) -> None:
        try:
            stamp, T_map_base, frame = pose_from_message(msg)
        except ValueError as exc:  # MessageError: a counted, named drop (never a callback error)
            self.health.drop("map_pose", f"map pose rejected: {exc}")
            self.get_logger().warning(f"ignoring map pose: {exc}", throttle_duration_sec=5.0)
            return
        self.alignment.add_map_pose(stamp, T_map_base, frame or "map")

    def _flush(self) -> None:
        """Settle a last colour image still waiting for depth or odometry that will not come."""
        self._add_frames(self.assembler.flush())

    def _publish_diagnostics(self) -> None:
        s = self.health.summary()
        level = DiagnosticStatus.OK
        message = "frames flowing"
        if not s["received"].get("colour"):
            level, message = DiagnosticStatus.WARN, "no colour image received"
        elif s["last_drop_age_s"] is not None and s["last_drop_age_s"] < 5.0:
            level, message = DiagnosticStatus.WARN, f"dropping frames: {s['last_drop_reason']}"
        values = {"keyframes": len(self.buffer), "frames_accepted": self.buffer.received,
                  "dropped_total": s["dropped"], "last_drop_reason": s["last_drop_reason"] or "",
                  "queries_received": self.received_queries, "answers_published": self.answered,
                  "queries_waiting": self.queries.qsize(), "callback_errors": self.callback_errors}
        values.update({f"received_{k}": v for k, v in s["received"].items()})
        values.update({f"dropped_{k}": v for k, v in s["dropped_by_reason"].items()})
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: sensors and queries", message=message,
                                  hardware_id=self.p["color_topic"],
                                  values=[KeyValue(key=k, value=clean_text(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ queries

    def _publish_answer(self, answer: Answer) -> None:
        try:
            self.answer_pub.publish(String(data=answer.to_json()))
        except Exception as exc:  # noqa: BLE001 - one answer that cannot be published must not stop the node
            self.get_logger().error(f"cannot publish the answer to {answer.id!r}: {exc!r}")
            self.answer_pub.publish(String(data=Answer.failure(clean_text(answer.id), "answer could not be "
                                                               f"published: {type(exc).__name__}").to_json()))
        self.answered += 1

    def _on_query(self, msg: String) -> None:
        self.received_queries += 1
        try:
            try:
                query = parse_query(msg.data, max_bytes=self.p["max_query_bytes"])
            except BadQueryError as exc:
                self.get_logger().warning(f"bad query {exc.query_id!r}: {exc}")
                self._publish_answer(Answer.failure(exc.query_id, f"bad query: {exc}"))
                return
            if self._closing:
                self._publish_answer(Answer.failure(query.id, "the node is shutting down", finish_reason=FinishReason.REJECTED))
                return
            if not self.active:
                self._publish_answer(Answer.failure(query.id, "the agent is inactive (lifecycle state "
                                                    f"{self._state_machine.current_state[1]}); activate it to serve queries",
                                                    finish_reason=FinishReason.REJECTED))
                return
            try:
                self.queries.put_nowait(query)
                self._wake.trigger()
            except queue.Full:
                self._publish_answer(Answer.failure(
                    query.id, f"query queue full ({self.queries.maxsize} waiting); retry later", finish_reason=FinishReason.REJECTED))
        except Exception as exc:  # noqa: BLE001 - the intake boundary: an answer, never a crash
            self.callback_errors += 1
            self.get_logger().error(f"query intake failed: {exc!r}")
            self._publish_answer(Answer.failure(None, f"internal error reading the query: {type(exc).__name__}"))

    def _on_cancel(self, request, response):
        current = self._current
        if current is None:
            response.success, response.message = False, "no query is running"
        else:
            self._cancel.set()
            response.success, response.message = True, clean_text(f"cancelling query {current.id!r} after its current turn")
        return response

    def _on_cancel_query(self, msg: String) -> None:
        """Cancel one query by id: the running one after its current turn, a waiting one at once."""
        qid = clean_text(msg.data)[:128]
        current = self._current
        if current is not None and current.id == qid:
            self._cancel.set()
            return
        with self.queries.mutex:
            waiting = [q for q in self.queries.queue if q.id == qid]
            for q in waiting:
                self.queries.queue.remove(q)
        for q in waiting:
            self._publish_answer(Answer.failure(q.id, "cancelled before it started", finish_reason=FinishReason.CANCELLED))

    def _on_clear(self, request, response):
        if self.buffer is None:
            response.success, response.message = False, "not configured"
            return response
        n = len(self.buffer)
        self.buffer.clear()
        self.assembler.reset()
        response.success, response.message = True, f"cleared {n} keyframes"
        return response

    def _work(self) -> None:
        while not self._closing and self.active:
            try:
                query = self.queries.get_nowait()
            except queue.Empty:
                return
            try:
                self._serve(query)
            except Exception as exc:  # noqa: BLE001 - the worker boundary: the query is answered, the node lives
                self.callback_errors += 1
                self.get_logger().error(f"query {query.id!r} failed: {exc!r}")
                self._publish_answer(Answer.failure(query.id, f"internal error: {type(exc).__name__}: {clean_text(exc)}"))

    def _on_turn(self, query: Query, start: float):
        def on_turn(trace, turn):
            stamp = self.get_clock().now().to_msg()
            for k in turn.new_images:  # 1-based indices of the images this turn drew
                rgb = np.asarray(trace.pil_images[k - 1].convert("RGB"))
                self.image_pub.publish(color_msg(rgb, stamp, self._optical_frame_id()))
            self.progress_pub.publish(String(data=json.dumps({
                "id": query.id, "turn": len(trace.turns), "boxes": len(turn.boxes), "lines": len(turn.lines),
                "new_images": turn.new_images, "finish_reason": turn.finish_reason, "error": turn.error,
                "elapsed_s": round(time.perf_counter() - start, 3)}, ensure_ascii=True)))

        return on_turn

    def _serve(self, query: Query) -> None:
        self._current = query
        self._cancel.clear()
        try:
            result = self.agent.answer(query, cancel=self._cancel, on_turn=self._on_turn(query, time.perf_counter()))
        finally:
            self._current = None
        answer, grounding = result.answer, result.grounding
        if answer.goal_sent and grounding is not None:
            try:
                self._publish_target(grounding)
            except Exception as exc:  # noqa: BLE001 - a pose that cannot be published is no goal
                answer.goal_sent, answer.target_pose = False, None
                answer.goal_reason = f"the target could not be published: {type(exc).__name__}: {exc}"
        self._publish_answer(answer)
        self.get_logger().info(clean_text(
            f"query {query.id!r}: answer {answer.answer!r} ({answer.finish_reason}) in {answer.elapsed_s:.2f} s"
            + (f"; error: {answer.error}" if answer.error else "")
            + ("; goal sent" if answer.goal_sent else (f"; no goal: {answer.goal_reason}" if query.target else ""))))

    def _publish_target(self, grounding) -> None:
        stamp = self.get_clock().now().to_msg()
        pose = pose_stamped(grounding.approach_position, grounding.approach_orientation, grounding.frame_id, stamp)
        markers = markers_msg(grounding.to_dict(), stamp)
        path = path_msg(grounding.waypoints, grounding.frame_id, stamp) if len(grounding.waypoints) >= 2 else None
        self.target_pub.publish(pose)
        if self.p["publish_goal_pose"]:
            self.goal_pub.publish(pose)
        if path is not None:
            self.path_pub.publish(path)
        self.marker_pub.publish(markers)
        if grounding.points is not None and len(grounding.points):
            self.points_pub.publish(points_msg(grounding.points, grounding.frame_id, stamp))

    def _optical_frame_id(self) -> str:
        """Optical frame id for annotated images (the camera's; images are model-resized)."""
        try:
            return self.buffer.latest().frame_id
        except EmptyBufferError:  # cleared while the query ran
            return "camera_color_optical_frame"

    def destroy_node(self):
        """Answer every query still waiting ('rejected: shutting down'), stop, wait for trace writes."""
        self._closing = True
        self._cancel.set()
        self._reject_waiting("the node is shutting down")
        if self.agent is not None:
            self.agent.close()
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``ros2 run vilasr_ros vilasr_agent --ros-args --params-file config/agent.yaml``."""
    from rclpy.executors import MultiThreadedExecutor

    from vilasr_ros.ros.runner import spin_node

    return spin_node(VilasrAgentNode, lambda: MultiThreadedExecutor(num_threads=4), "vilasr_agent", args)


if __name__ == "__main__":
    sys.exit(main())
