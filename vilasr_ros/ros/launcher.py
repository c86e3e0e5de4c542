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
import uuid
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
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a ROS 2 parameter file")
    out: dict[str, dict[str, Any]] = {}
    for node, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ValueError(f"{path}: entry {node!r} has no ros__parameters")
        out[str(node).lstrip("/")] = flatten(body["ros__parameters"] or {})
    common = out.pop("**", {})
    return {node: {**common, **params} for node, params in out.items()}


def _coerce(value: Any, default: Any) -> Any:
    """YAML ``1`` for a float parameter → ``1.0`` (rclpy refuses type changes)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list) and isinstance(value, list) and default and isinstance(default[0], float):
        return [float(v) for v in value]
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
    return [Parameter(name, value=_coerce(value, defaults[name])) for name, value in params.items()]


def demo_responses() -> Path:
    """The scripted model turns the agent replays when no weights are present (a keyboard box on
    the first frame, then an answer) — shipped with the package."""
    from importlib import resources

    return Path(str(resources.files("vilasr_ros.resources").joinpath("demo_responses.json")))


def pick_engine(engine: str, model: str | None) -> tuple[str, dict[str, Any], str]:
    """Resolve ``auto``: the transformers engine when ViLaSR weights are available locally, else
    the replay engine with :func:`demo_responses`. Returns (engine, agent parameters, a plain
    sentence saying which engine answers)."""
    if engine != "auto":
        return engine, {}, f"engine: {engine}"
    from vilasr_ros.engines import DEFAULT_MODEL_ID
    from vilasr_ros.errors import VilasrError

    try:
        from vilasr_ros.engines.hf import resolve_model_path

        path = resolve_model_path(model or DEFAULT_MODEL_ID)
        return "transformers", {}, f"engine: transformers — ViLaSR weights at {path}"
    except (VilasrError, ImportError, OSError) as exc:
        return "replay", {"responses": str(demo_responses())}, (
            f"engine: replay — no ViLaSR weights here ({exc}); the answer below is SCRIPTED "
            f"({demo_responses().name}), not a model's. Download the weights or pass --base-url to a server.")


def run_agent(config: str | Path | None = None, *, camera: dict[str, Any] | None = None,
              agent: dict[str, Any] | None = None, query: str | None = None, wait_frames: int = 16,
              timeout_s: float = 600.0, reasoner=None, print_fn=print) -> int:
    """Run ``camera_node`` and ``vilasr_agent`` in this process (rclpy must be importable and the
    DDS environment set).

    Args:
        config: Parameter file (default: the shipped ``config/agent.yaml``).
        camera, agent: Parameter overrides per node; an empty camera ``source`` runs the agent
            alone (frames from other processes).
        query: Query JSON to send once ``wait_frames`` keyframes are buffered; the process then
            exits after the answer (exit code 0 when it has no ``error``).
        timeout_s: Give up waiting for frames or the answer after this long.

    Returns:
        Process exit code.
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from vilasr_ros.ros.agent_node import PARAMETERS, VilasrAgentNode
    from vilasr_ros.ros.camera_node import DEFAULTS as CAMERA_DEFAULTS
    from vilasr_ros.ros.camera_node import CameraNode

    params = load_parameters(config or default_config())
    cam_params = {**params.get("camera_node", {}), **(camera or {})}
    agent_params = {**params.get("vilasr_agent", {}), **(agent or {})}
    agent_defaults = {k: v[0] for k, v in PARAMETERS.items()}

    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=6)
    nodes = []
    code = 0
    try:
        if cam_params.get("source"):
            cam_params.setdefault("wait_for_subscribers", 1)  # no frame lost before the agent is matched
            nodes.append(CameraNode(parameter_overrides=overrides(cam_params, CAMERA_DEFAULTS)))
        node = VilasrAgentNode(reasoner=reasoner, parameter_overrides=overrides(agent_params, agent_defaults))
        nodes.append(node)
        for n in nodes:
            executor.add_node(n)
        if query is None:
            executor.spin()
            return 0
        client = rclpy.create_node("vilasr_agent_cli")
        nodes.append(client)
        executor.add_node(client)
        data = json.loads(query)
        data.setdefault("id", uuid.uuid4().hex[:8])
        answers: list[dict] = []
        client.create_subscription(String, "/vilasr_agent/answer",
                                   lambda m: answers.append(json.loads(m.data)),
                                   QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        publisher = client.create_publisher(String, "/vilasr_agent/query",
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + timeout_s
        want = min(wait_frames, data.get("frames") or wait_frames)
        while len(node.buffer) < want and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            if nodes[0] is not node and getattr(nodes[0], "finished", None) and nodes[0].finished.is_set():
                break
        print_fn(f"buffer: {len(node.buffer)} keyframes of {node.buffer.received} frames received")
        while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        publisher.publish(String(data=json.dumps(data)))
        print_fn(f"query: {json.dumps(data)}")
        mine = None
        while mine is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            mine = next((a for a in answers if a.get("id") == data["id"]), None)
        if mine is None:
            print_fn(f"no answer within {timeout_s:.0f} s")
            return 1
        node.agent.close()  # wait for the trace to be written
        print_fn(f"answer: {mine['answer']}")
        print_fn(f"finish_reason: {mine['finish_reason']}" + (f"  error: {mine['error']}" if mine["error"] else ""))
        pose = mine.get("target_pose")
        if pose:
            p, q = pose["position"], pose["orientation"]
            print_fn(f"target_pose ({pose['frame_id']}): position [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}] m, "
                     f"orientation xyzw [{q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f}]")
        elif data.get("target"):
            print_fn("target_pose: none")
        print_fn(f"trace: {mine['trace_dir']}")
        code = 0 if not mine["error"] else 1
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return code
