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
    # No thread per query: 12 queries in the second minute would add >= 12. Thread pools fill lazily — rclpy's
    # MultiThreadedExecutor(num_threads=4) and the trace writer (1) start a thread only when callbacks overlap,
    # and OpenMP starts its workers on first use — so the count may still rise by up to those 5.
    threads = [row["threads"] for row in result["rows"]]
    assert threads[-1] - threads[0] <= 5, threads
