"""Settings dataclasses as ROS 2 parameters, and a lifecycle node's transition service guarded.

The node's parameters are the fields of a settings dataclass (:mod:`vilasr_ros.settings`): each is
declared with its default and a ``ParameterDescriptor`` carrying the help text, the choices, the
numeric range (``integer_range`` / ``floating_point_range``) and ``read_only`` for those that may not
change while the node runs.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vilasr_ros.sanitize import clean_text
from vilasr_ros.settings import Spec


def descriptor(spec: Spec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of one setting."""
    text = spec.help + (f" (one of {', '.join(spec.choices)})" if spec.choices else "")
    extra = {}
    if spec.low is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            extra["integer_range"] = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
        else:
            extra["floating_point_range"] = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    return ParameterDescriptor(description=text, read_only=not spec.dynamic, **extra)


def declare_settings(node, table: dict[str, Spec]) -> dict[str, Any]:
    """Declare every setting of ``table`` on ``node``; returns ``{name: value}`` as overridden at start."""
    for name, spec in table.items():
        node.declare_parameter(name, spec.default, descriptor(spec))
    return {name: node.get_parameter(name).value for name in table}


def guard_transitions(node) -> None:
    """An invalid transition on ``~/change_state`` (an id not registered, or one the current state does
    not offer) is refused with ``success: false`` — rclpy would raise out of the service callback and
    end the node — and the node keeps its state (what Nav2 nodes do under their lifecycle manager)."""
    service = getattr(node, "_service_change_state", None)
    if service is None:
        return
    inner = service.callback

    def change_state(request, response):
        try:
            return inner(request, response)
        except Exception as exc:  # noqa: BLE001 - RCLError: not a transition of this state
            node.get_logger().warning(clean_text(
                f"transition {request.transition.id} {request.transition.label!r} refused in state "
                f"{node._state_machine.current_state[1]}: {exc}"))
            response.success = False
            return response

    service.callback = change_state
