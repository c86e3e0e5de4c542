"""The ``main()`` of a node executable: init, spin, say plainly why it stopped, shut down cleanly."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import rclpy
import rclpy.logging
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


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
        executor.spin()
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
