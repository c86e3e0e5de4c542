"""A client handle for a running ``vilasr_agent``: ask over ROS, then wait, poll or cancel.

The agent takes queries on ``~/query`` (``std_msgs/String`` JSON, :class:`vilasr_ros.query.Query`)
and answers each exactly once on ``~/answer``; ``~/cancel_query`` (String: a query id) cancels one
query, running or waiting. :class:`AgentClient` wraps those topics the way
``nav2_simple_commander`` wraps Nav2's actions, with bounded waits::

    import rclpy
    from vilasr_ros.ros.client import AgentClient

    with rclpy.init():
        node = rclpy.create_node("my_client")
        client = AgentClient(node)                       # /vilasr_agent/query, /vilasr_agent/answer
        handle = client.ask({"question": "Where is the sofa? Go to it.", "target": "sofa"})
        answer = handle.result(timeout_s=120.0, spin=node)   # dict: the ~/answer JSON
        print(answer["answer"], answer["target_pose"])

Answers are matched to queries by ``id`` (a random one is given to a query that has none).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from typing import Any

from vilasr_ros.query import Query, parse_query, query_from_dict

QUERY_QOS_DEPTH = 1000
"""``~/query`` and ``~/answer`` keep this many messages (reliable, both sides): a client bursting
queries must publish reliable with a history at least as deep (README "Queries in bursts")."""


def reliable_qos(depth: int = QUERY_QOS_DEPTH):
    """Reliable, keep-last ``depth`` QoS: what the agent's query and answer topics use."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class QueryHandle:
    """One query sent to the agent (returned by :meth:`AgentClient.ask`).

    Attributes:
        id: The query's id (the answer carries the same).
        query: The validated query that was sent.
    """

    def __init__(self, client: "AgentClient", query: Query):
        self._client = client
        self.query = query
        self.id: str = query.id or ""
        self._answer: dict[str, Any] | None = None
        self._done = threading.Event()

    def _resolve(self, answer: dict[str, Any]) -> None:
        self._answer = answer
        self._done.set()

    def done(self) -> bool:
        """True once the agent's answer has arrived (served, failed, cancelled or rejected)."""
        return self._done.is_set()

    def result(self, timeout_s: float, spin=None) -> dict[str, Any]:
        """The answer (the ``~/answer`` JSON as a dict), waiting at most ``timeout_s`` seconds.

        Args:
            timeout_s: Longest wait (seconds).
            spin: A node or executor to spin while waiting (``spin_once``), for a caller whose node no
                other thread spins; None: another thread spins it.

        Raises:
            TimeoutError: No answer within ``timeout_s`` (the query may still be running: :meth:`cancel`).
        """
        self._client._wait(self._done.is_set, timeout_s, spin)
        if not self._done.is_set():
            raise TimeoutError(f"no answer to query {self.id!r} within {timeout_s:g} s")
        assert self._answer is not None
        return self._answer

    def cancel(self) -> None:
        """Ask the agent to cancel this query: a waiting query is answered ``cancelled`` at once, a
        running one after its current model turn (no goal is sent). Its answer still arrives."""
        from std_msgs.msg import String

        self._client._cancel_pub.publish(String(data=self.id))


class AgentClient:
    """Sends queries to a ``vilasr_agent`` and matches its answers (see the module docstring).

    Args:
        node: An rclpy node of the caller's; the client adds a publisher and a subscription to it.
        agent: The agent's fully qualified node name (``/vilasr_agent``, or with a namespace).
        max_query_bytes: Largest query text sent (the agent's ``max_query_bytes``; a bigger one is refused here).
    """

    def __init__(self, node, agent: str = "/vilasr_agent", max_query_bytes: int = 1 << 20):
        from std_msgs.msg import String

        self.node = node
        self.agent = "/" + agent.strip("/")
        self.max_query_bytes = max_query_bytes
        self._lock = threading.Lock()
        self._handles: dict[str, QueryHandle] = {}
        self._query_pub = node.create_publisher(String, f"{self.agent}/query", reliable_qos())
        self._cancel_pub = node.create_publisher(String, f"{self.agent}/cancel_query", reliable_qos(100))
        self._sub = node.create_subscription(String, f"{self.agent}/answer", self._on_answer, reliable_qos())

    def _on_answer(self, msg) -> None:
        try:
            answer = json.loads(msg.data)
        except ValueError:
            self.node.get_logger().warning("an answer that is not JSON was ignored", throttle_duration_sec=5.0)
            return
        if not isinstance(answer, dict):
            return
        with self._lock:
            handle = self._handles.pop(str(answer.get("id")), None)
        if handle is not None:
            handle._resolve(answer)

    @staticmethod
    def _wait(predicate, timeout_s: float, spin) -> None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not predicate() and time.monotonic() < deadline:
            if spin is None:
                time.sleep(0.02)
            else:
                from vilasr_ros.ros.runner import spin_once

                spin_once(spin, 0.05)  # an executor or a node

    def wait_for_agent(self, timeout_s: float, spin=None) -> bool:
        """Wait until the agent subscribes to ``~/query`` (its configure transition made it); True if it did."""
        self._wait(lambda: self._query_pub.get_subscription_count() > 0, timeout_s, spin)
        return self._query_pub.get_subscription_count() > 0

    def ask(self, query: Query | dict[str, Any] | str) -> QueryHandle:
        """Send a query; returns its handle at once.

        Args:
            query: A :class:`~vilasr_ros.query.Query`, its JSON object, or JSON text. A query without an
                ``id`` gets a random one.

        Raises:
            BadQueryError: The query is not valid (checked here, before it is sent).
        """
        if isinstance(query, str):
            query = parse_query(query, max_bytes=self.max_query_bytes)
        elif isinstance(query, dict):
            query = query_from_dict(query)[0]
        if not query.id:
            query = dataclasses.replace(query, id=uuid.uuid4().hex[:12])
        handle = QueryHandle(self, query)
        with self._lock:
            self._handles[handle.id] = handle
        from std_msgs.msg import String

        self._query_pub.publish(String(data=json.dumps(query.to_dict(), ensure_ascii=False)))
        return handle

    def destroy(self) -> None:
        """Remove the client's publishers and subscription from the node."""
        for pub in (self._query_pub, self._cancel_pub):
            self.node.destroy_publisher(pub)
        self.node.destroy_subscription(self._sub)
