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
from rcl_interfaces.msg import SetParametersResult
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vilasr_ros.agent import Answer, SpatialAgent
from vilasr_ros.agent_settings import AgentNodeSettings, engine_from_settings
from vilasr_ros.protocol import FinishReason
from vilasr_ros.query import BadQueryError, Query, parse_query
from vilasr_ros.buffer import EmptyBufferError, FrameBuffer
from vilasr_ros.errors import ConfigError
from vilasr_ros.health import SensorHealth
from vilasr_ros.messages import (
    decode_color,
    decode_depth,
    intrinsics_from_camera_info,
    pose_covariance,
    pose_from_message,
    stamp_s,
)
from vilasr_ros.ros.conversions import (
    color_msg,
    markers_msg,
    object_markers_msg,
    points_msg,
    path_msg,
    pose_stamped,
    transform_from_xyz_quat,
)
from vilasr_ros.pairing import FrameAssembler, MapAlignment
from vilasr_ros.ros.client import QUERY_QOS_DEPTH, reliable_qos
from vilasr_ros.ros.parameters import declare_settings, guard_transitions
from vilasr_ros.sanitize import clean_text, redact
from vilasr_ros.settings import from_parameters, specs


TRANSITION_WAIT_S = 30.0
"""A lifecycle transition waits this long for the running query to stop (it stops after its current
model turn); a cleanup that cannot wait longer fails and keeps the model."""
PARAMETERS = specs(AgentNodeSettings)
"""``{name: Spec}``: the node's parameters, generated from :class:`~vilasr_ros.agent_settings.AgentNodeSettings`."""


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
        p = self.p = declare_settings(self, PARAMETERS)
        try:
            self.settings = from_parameters(AgentNodeSettings, p)
        except ConfigError as exc:
            raise ValueError(f"parameter {exc}") from None
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
        guard_transitions(self)
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
        self._stop_work("the agent is inactive (deactivated); activate it to serve queries")
        for sub in self._sensor_subs:
            self.destroy_subscription(sub)
        self._sensor_subs = []
        self.get_logger().info("inactive: sensors unsubscribed, queries refused; the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._stop_work("the agent is being unconfigured"):
            self.get_logger().error(f"cleanup refused: the running query did not stop within {TRANSITION_WAIT_S:g} s")
            return TransitionCallbackReturn.FAILURE
        self._teardown()
        self.get_logger().info("unconfigured: the model and the buffer are freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._stop_work("the node is shutting down"):
            self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _stop_work(self, why: str) -> bool:
        """Before any transition: refuse new queries, answer the waiting ones ``rejected``, cancel the
        running one (it is answered ``cancelled`` after its current turn, with no goal) and wait for it
        at most :data:`TRANSITION_WAIT_S`. True when no query is running any more."""
        self.active = False
        self._cancel.set()
        self._reject_waiting(why)
        deadline = time.monotonic() + TRANSITION_WAIT_S
        while self._current is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._current is None

    def _configure(self) -> None:
        p = self.p
        s = self.settings = from_parameters(AgentNodeSettings, p)  # the parameters as they are now
        self.health = SensorHealth()
        self.buffer = FrameBuffer(s.buffer_config(), wall_clock=lambda: self.get_clock().now().nanoseconds * 1e-9,
                                  health=self.health)
        self.assembler = FrameAssembler(
            decode_color, decode_depth, T_base_camera=transform_from_xyz_quat(s.T_base_camera),
            keep=self.buffer.wants, on_skip=self.buffer.note, health=self.health,  # only keyframes are decoded
            **s.assembler_options())
        self.alignment = MapAlignment(self.assembler.odometry_at, max_covariance_m2=s.max_map_covariance) \
            if s.map_pose_topic else None
        self.reasoner = self._given_reasoner or self._build_reasoner()
        engine = self.reasoner.engine.describe()
        if engine.get("responses") == "shipped demo script" and p["publish_goal_pose"]:
            raise ValueError("publish_goal_pose is true but the engine is the scripted demo (no weights, no "
                             "base_url): a scripted answer never drives a robot; give model or base_url")
        self.agent = SpatialAgent(self.reasoner, self.buffer, s.agent_config(), localization=self.alignment,
                                  memory=s.memory())

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
            "points_pub": (PointCloud2, "~/target_points", 10), "memory_marker_pub": (MarkerArray, "~/memory_markers", 1),
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

        name, config, sentence = engine_from_settings(self.settings)
        self.get_logger().info(redact(sentence))
        return Reasoner(create_engine(name, config), reasoner_config(**self.settings.loop_options()))

    def _on_set_parameters(self, params) -> SetParametersResult:
        new = {**self.p, **{param.name: param.value for param in params}}
        try:
            settings = from_parameters(AgentNodeSettings, new)
            config = settings.agent_config()
        except ValueError as exc:  # ConfigError from the ranges and choices, ValueError from the configs
            return SetParametersResult(successful=False, reason=str(exc))
        self.p, self.settings = new, settings
        if self.agent is not None:
            self.agent.config = config
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
            if self.buffer.add(frame) and self.agent is not None:
                self.agent.remember(frame)  # to the keyframe memory, when there is one (never blocks)

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
            self.alignment.add_map_pose(stamp, T_map_base, frame or "map", covariance=pose_covariance(msg))
        except ValueError as exc:  # MessageError: a counted, named drop (never a callback error)
            self.health.drop("map_pose", f"map pose rejected: {exc}")
            self.get_logger().warning(f"ignoring map pose: {exc}", throttle_duration_sec=5.0)

    def _flush(self) -> None:
        """Settle a last colour image still waiting for depth or odometry that will not come."""
        self._add_frames(self.assembler.flush())

    def _publish_diagnostics(self) -> None:
        if self.buffer is None:  # unconfigured while the timer fired
            return
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
        if self.agent is not None and self.agent.memory is not None:
            values.update(self.agent.memory.counters())
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
        if not self.active or self._closing:  # a transition began while this query was taken off the queue
            self._cancel.set()
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
        memory = self.agent.memory if self.agent is not None else None
        if memory is not None and answer.target is not None:  # the object memory may have grown
            try:
                self.memory_marker_pub.publish(object_markers_msg(memory.store.objects(evidence=False), self.get_clock().now().to_msg()))
            except Exception as exc:  # noqa: BLE001 - markers are a view; the answer is out
                self.get_logger().warning(f"object memory markers not published: {type(exc).__name__}: {exc}")
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
        buffer = self.buffer
        try:
            return buffer.latest().frame_id if buffer is not None else "camera_color_optical_frame"
        except EmptyBufferError:  # cleared while the query ran
            return "camera_color_optical_frame"

    def destroy_node(self):
        """Answer every query still waiting ('rejected: shutting down'), cancel the running one and wait
        for it (bounded), wait for trace writes, then destroy."""
        self._closing = True
        self._stop_work("the node is shutting down")
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
