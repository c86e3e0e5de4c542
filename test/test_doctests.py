"""The examples in public docstrings run and hold."""

import doctest

import pytest

import vilasr_ros.protocol
import vilasr_ros.sanitize
import vilasr_ros.scoring
import vilasr_ros_training.rewards


@pytest.mark.parametrize("module", [vilasr_ros.protocol, vilasr_ros.sanitize, vilasr_ros.scoring, vilasr_ros_training.rewards])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
