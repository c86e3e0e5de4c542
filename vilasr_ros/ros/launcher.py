"""``vilasr agent``: both nodes in one process from ``config/agent.yaml`` — for machines with
pip-installed ROS 2 and no ``ros2`` CLI (the launch file does the same with two processes).

With ``--query JSON`` it waits for frames, sends the query on the agent's ``~/query`` topic like
any ROS client, prints the answer and the target pose, and exits; without it, it serves until
Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml


logger = logging.getLogger(__name__)


def default_config() -> Path:
    """``config/agent.yaml`` from the source tree or the installed share folder."""
    from vilasr_ros.ros.env import fastdds_profile

    return fastdds_profile().parent / "agent.yaml"


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings → ROS dotted parameter names (``buffer: {max_frames: 1}`` →
    ``buffer.max_frames``), as the ROS parameter-file parser does."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ROS 2 parameter file → ``{node_name: {parameter: value}}`` (``/**`` entries apply to all).

    Raises:
        ValueError: Not a ROS 2 parameter file.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        raise ValueError(f"{path}:{where} YAML error: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a ROS 2 parameter file")
    out: dict[str, dict[str, Any]] = {}
    for node, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ValueError(f"{path}: entry {node!r} has no ros__parameters")
        out[str(node).lstrip("/")] = flatten(body["ros__parameters"] or {})
    common = out.pop("**", {})
    return {node: {**common, **params} for node, params in out.items()}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """YAML ``1`` for a float parameter → ``1.0`` (rclpy refuses type changes); any other type
    mismatch is a one-line error naming the parameter.

    Raises:
        ValueError: ``value`` is not of the parameter's type.
    """
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and isinstance(value, list) and default and isinstance(default[0], float):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"parameter {name} must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if type(value) is not type(default):
        raise ValueError(f"parameter {name} must be {type(default).__name__} (like {default!r}), got {value!r}")
    return value


def overrides(params: dict[str, Any], defaults: dict[str, Any]):
    """rclpy ``Parameter`` list for ``Node(parameter_overrides=...)``.

    Raises:
        ValueError: A parameter the node does not declare.
    """
    from rclpy.parameter import Parameter

    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}")
    return [Parameter(name, value=_coerce(name, value, defaults[name])) for name, value in params.items()]


def run_agent(config: str | Path | None = None, *, camera: dict[str, Any] | None = None,
              agent: dict[str, Any] | None = None, query: str | None = None, wait_frames: int = 16,
              timeout_s: float = 600.0, reasoner=None, print_fn=print) -> int:
    """Run ``camera_node`` and ``vilasr_agent`` in this process (rclpy must be importable and the
    DDS environment set); with ``query``, ask it through an :class:`~vilasr_ros.ros.client.AgentClient`.

    Args:
        config: Parameter file (default: the shipped ``config/agent.yaml``).
        camera, agent: Parameter overrides per node; an empty camera ``source`` runs the agent
            alone (frames from other processes).
        query: Query JSON to send once ``wait_frames`` keyframes are buffered — or once every frame of a
            finite source has reached the agent; the process then exits after the answer (exit code 0
            when it has no ``error``). When the source knows the scene's ground truth (a sim scene),
            the target's error in metres is printed too.
        timeout_s: Give up waiting for frames or the answer after this long.

    Returns:
        Process exit code.

    Raises:
        ValueError: A parameter file or override that is not valid (one line).
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from vilasr_ros.ros.agent_node import PARAMETERS, VilasrAgentNode
    from vilasr_ros.ros.camera_node import DEFAULTS as CAMERA_DEFAULTS
    from vilasr_ros.ros.camera_node import CameraNode
    from vilasr_ros.ros.runner import spin

    params = load_parameters(config or default_config())
    cam_params = {**params.get("camera_node", {}), **(camera or {})}
    agent_params = {**params.get("vilasr_agent", {}), **(agent or {})}
    agent_defaults = {k: spec.default for k, spec in PARAMETERS.items()}
    cam_overrides = overrides(cam_params, CAMERA_DEFAULTS) if cam_params.get("source") else []
    agent_overrides = overrides(agent_params, agent_defaults)

    from vilasr_ros.ros.env import limit_heap_fragmentation

    limit_heap_fragmentation()
    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=6)
    nodes = []
    code = 0
    try:
        camera_node = None
        if cam_params.get("source"):
            cam_overrides.append(_wait_param(cam_params))
            camera_node = CameraNode(parameter_overrides=cam_overrides)
            nodes.append(camera_node)
        node = VilasrAgentNode(reasoner=reasoner, parameter_overrides=agent_overrides)
        nodes.append(node)
        for n in nodes:
            executor.add_node(n)
        if query is None:
            spin(executor)
            return 0
        code = _ask_once(executor, node, camera_node, query, wait_frames, timeout_s, print_fn, nodes)
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return code


def _ask_once(executor, node, camera_node, query: str, wait_frames: int, timeout_s: float, print_fn, nodes) -> int:
    """``vilasr agent --query``: wait for the frames, ask through an AgentClient, print the answer."""
    import rclpy

    from vilasr_ros.ros.client import AgentClient
    from vilasr_ros.ros.runner import spin_once

    client_node = rclpy.create_node("vilasr_agent_cli")
    nodes.append(client_node)
    executor.add_node(client_node)
    client = AgentClient(client_node, "/" + node.get_name())
    deadline = time.monotonic() + timeout_s

    def spin_until(predicate) -> None:
        while not predicate() and time.monotonic() < deadline:
            spin_once(executor, 0.05)

    from vilasr_ros.query import parse_query

    parsed = parse_query(query, max_bytes=1 << 20)
    want = 0 if parsed.wants_memory else min(wait_frames, parsed.frames or wait_frames)  # memory: no wait
    finished = camera_node.finished if camera_node is not None else None

    def settled() -> bool:  # every frame a finished source published has reached the agent and been settled
        seen = node.health.received.get("colour", 0)
        return seen >= camera_node.published and not node.assembler.pending()

    spin_until(lambda: len(node.buffer) >= want or (finished is not None and finished.is_set()))
    if finished is not None and finished.is_set():
        spin_until(settled)
    print_fn(f"buffer: {len(node.buffer)} keyframes of {node.buffer.received} frames received"
             + (f" (the source ended after {camera_node.published} frames)" if finished is not None and finished.is_set() else ""))
    client.wait_for_agent(max(0.0, deadline - time.monotonic()), spin=executor)
    handle = client.ask(query)
    print_fn(f"query: {json.dumps(handle.query.to_dict(), ensure_ascii=False)}")
    try:
        answer = handle.result(max(0.0, deadline - time.monotonic()), spin=executor)
    except TimeoutError:
        print_fn(f"no answer within {timeout_s:.0f} s")
        return 1
    node.agent.close()  # wait for the trace to be written
    return print_answer(answer, handle.query.to_dict(), camera_node.source if camera_node is not None else None, print_fn)


def _wait_param(cam_params: dict[str, Any]):
    from rclpy.parameter import Parameter

    # no frame lost before the agent is matched
    return Parameter("wait_for_subscribers", value=int(cam_params.get("wait_for_subscribers") or 1))


def print_answer(answer: dict[str, Any], query: dict[str, Any], source=None, print_fn=print) -> int:
    """Print an answer as ``vilasr agent --query`` does; returns the exit code (0: no error)."""
    print_fn(f"answer: {answer['answer']}")
    print_fn(f"finish_reason: {answer['finish_reason']}" + (f"  error: {answer['error']}" if answer["error"] else ""))
    pose = answer.get("target_pose")
    if pose:
        p, q = pose["position"], pose["orientation"]
        print_fn(f"target_pose ({pose['frame_id']}): position [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m, "
                 f"orientation xyzw [{q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f}]")
    elif query.get("target"):
        print_fn(f"target_pose: none — no goal sent ({answer.get('goal_reason')})")
    target = answer.get("target") or {}
    if target.get("position_world") is not None:
        print_fn(f"target object ({target.get('label')}): [{', '.join(f'{v:.3f}' for v in target['position_world'])}] m "
                 f"in {target.get('frame_id')}, confidence {target.get('confidence')}")
        error = source.target_error(query["target"], target["position_world"]) if source is not None else None
        if error is not None:
            print_fn(f"ground truth: target error {error['distance_m']:.3f} m (distance to the {error['object']}'s bounding box; "
                     f"{error['centre_m']:.3f} m from its centre)")
    print_fn(f"trace: {answer['trace_dir']}")
    return 0 if not answer["error"] else 1
