"""The ``main()`` of a node executable: init, spin, log a construction error, shut down cleanly."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
import rclpy.logging
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], make_executor: Callable[[], Executor], name: str,
              args: list[str] | None = None) -> int:
    """Run one node until Ctrl-C or shutdown.

    Returns:
        0, or 2 when the node could not be built (bad parameter, engine or source); the reason is
        logged as fatal under ``name`` instead of a traceback.
    """
    rclpy.init(args=args)
    executor = make_executor()
    node = None
    try:
        node = make_node()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # the normal ways to stop
    except Exception as exc:  # construction failed: say why plainly
        rclpy.logging.get_logger(name).fatal(f"{name}: {exc}")
        return 2
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
