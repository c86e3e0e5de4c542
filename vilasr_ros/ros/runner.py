"""The ``main()`` of a node executable: init, spin, say plainly why it stopped, shut down cleanly."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import rclpy
import rclpy.logging
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

#: How many InvalidHandle races in a row (each within :data:`RACE_WINDOW_S` of the last) :func:`spin`
#: rides out before it lets the exception through: one destroy makes one race, a stuck handle makes many.
MAX_RACES = 50
RACE_WINDOW_S = 1.0


def spin(executor: Executor) -> None:
    """``executor.spin()`` that survives rclpy's destroy-while-waiting race.

    A lifecycle transition (cleanup, shutdown) destroys subscriptions, publishers and timers from a
    callback thread; when a multi-threaded executor is building its wait set at that moment, rclpy
    (Jazzy 7.1) raises ``InvalidHandle: cannot use Destroyable because destruction was requested``
    from the entity's QoS event handler and the executor's ``spin()`` ends (ros2/rclpy#1142, #1284,
    #1355: open upstream). The entity is already gone from the node, so the next wait set is valid:
    this spins again. Returns when the executor is shut down or the context is; raises the
    ``InvalidHandle`` only when it repeats :data:`MAX_RACES` times within :data:`RACE_WINDOW_S` each
    (a handle that stays invalid is a bug to see, not a race to hide).
    """
    races, last = 0, 0.0
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle:
            now = time.monotonic()
            races = races + 1 if now - last < RACE_WINDOW_S else 1
            last = now
            if races >= MAX_RACES:
                raise


def spin_once(target, timeout_sec: float) -> None:
    """One ``spin_once`` of an executor or a node that rides out the destroy-while-waiting race of
    :func:`spin` (the next call builds a valid wait set)."""
    try:
        if isinstance(target, Executor):
            target.spin_once(timeout_sec=timeout_sec)
        else:
            rclpy.spin_once(target, timeout_sec=timeout_sec)
    except InvalidHandle:
        pass


def spin_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor], name: str,
              args: list[str] | None = None) -> int:
    """Run one node until Ctrl-C or shutdown.

    Returns:
        0 after Ctrl-C or a shutdown; 2 when the node could not be built (bad parameter, engine or
        source: the reason is logged as fatal, no traceback); 1 if the executor itself failed while
        running (logged as an error with the traceback — callbacks catch their own failures, so this
        is a bug, never a message).
    """
    from vilasr_ros.ros.env import limit_heap_fragmentation

    limit_heap_fragmentation()
    rclpy.init(args=args)
    executor = make_executor()
    node = None
    code = 0
    try:
        try:
            node = make_node()
        except Exception as exc:  # noqa: BLE001 - construction failed: say why plainly
            rclpy.logging.get_logger(name).fatal(f"{name} could not start: {exc}")
            return 2
        executor.add_node(node)
        spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # the normal ways to stop
    except Exception as exc:  # noqa: BLE001 - a failure while running (not at construction)
        rclpy.logging.get_logger(name).error(
            f"{name} stopped while running: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        code = 1
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
