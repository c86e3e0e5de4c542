"""A short soak: benchmarks/soak.py for 2 minutes (a 30 Hz VGA camera, a query every 5 s)."""

import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_two_minute_soak_answers_everything_and_keeps_disk_under_the_cap(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--minutes", "2", "--trace-cap-mb", "40",
                          "--json", str(tmp_path / "soak.json")], capture_output=True, text=True, timeout=420)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["queries"] >= 20 and result["answered"] == result["queries"] and not result["duplicates"]
    assert result["trace_disk_mib"] <= 40.0
    assert len({row["threads"] for row in result["rows"]}) == 1  # no thread leak minute to minute
