"""Shared fixtures: the test data shipped in test/data, a tiny Qwen2.5-VL built offline, loopback-only ROS env."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Everything the tests read ships in the repository (test/data/README.md names sources and licences):
# a plain clone tests itself.
DATA = REPO / "test" / "data"
SPEC = DATA / "spec"
VECTORS = SPEC / "vectors"
RGBD = DATA / "rgbd"

# Tests never reach a hub: everything is built here or read from test/data.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="vilasr_hf_home_"))
# MuJoCo renders headless (Mesa EGL; osmesa also works): set before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

# DDS stays on loopback for every rclpy process of this run (this one and the nodes it starts, which
# inherit the environment): loopback discovery, a domain id unique to the run, a temp log dir and the
# shipped Fast DDS profile (large shared-memory segment). Set before anything imports rclpy.
from vilasr_ros.ros.env import loopback_environment  # noqa: E402  (no rclpy import)

if "PYTEST_XDIST_WORKER" in os.environ:
    # pytest-xdist (``make test`` runs ``-n 2``): each worker's math libraries get its share of the
    # cores (torch, OpenMP and BLAS spin-wait: two workers at 2 threads each on 2 cores run a training
    # test 5x slower than one). Inherited by the subprocesses the tests start. Set before torch loads.
    _share = str(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _share)


def _domain_id() -> int:
    """One domain per run and per pytest-xdist worker (workers share their parent's pid: the run)."""
    if "VILASR_TEST_DOMAIN_ID" in os.environ:
        return int(os.environ["VILASR_TEST_DOMAIN_ID"])
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return 1 + os.getpid() % 100
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    return 1 + (os.getppid() % max(1, 100 // workers)) * workers + int(worker.removeprefix("gw")) % workers


ROS_ENV = loopback_environment(domain_id=_domain_id(),
                               log_dir=tempfile.mkdtemp(prefix="vilasr_roslog_"))
os.environ.update(ROS_ENV)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # explicit: discovery never leaves loopback


def pytest_configure(config):
    for name, text in (
        ("ros", "starts rclpy nodes on loopback"),
        ("sim", "renders MuJoCo scenes"),
        ("slow", "takes more than ~20 s"),
        ("gpu", "needs a CUDA device"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")


def wait_until(predicate, timeout: float, what, poll_s: float = 0.05) -> None:
    """Poll ``predicate`` every ``poll_s`` s until it is true.

    Raises:
        AssertionError: Still false after ``timeout`` s; names ``what`` (text, or a callable giving it
        when the wait fails, for a message that shows the last state).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what if isinstance(what, str) else what()}")


def stop_processes(*procs: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGINT every process still running (ROS nodes and servers shut down cleanly on it), wait up to
    ``timeout`` s for each, kill what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen2.5-VL saved like real weights (config, safetensors, tokenizer, processor)."""
    from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen3-VL saved the same way (``vilasr train tiny-model DIR --family qwen3_vl``)."""
    from vilasr_ros.tiny_model import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny_qwen3_vl"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from vilasr_ros.engines.hf import TransformersEngine

    return TransformersEngine(str(tiny_model_dir))


def shared_dir(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test run, shared read-only by the pytest-xdist
    workers (the pattern of pytest-xdist's docs: the run's common base temp folder and a file lock;
    without xdist, an ordinary session temp folder). Tests write their outputs elsewhere."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.mktemp(name)
        build(root)
        return root
    root = tmp_path_factory.getbasetemp().parent / name
    with FileLock(str(root) + ".lock"):
        if not (root / ".complete").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died while building left half of it
            root.mkdir()
            build(root)
            (root / ".complete").touch()
    return root


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """A generated sim dataset: 3 rooms (16-frame walkthroughs, seed 7) and one maze (built once per run)."""
    from vilasr_ros_sim.dataset import generate_dataset

    return shared_dir(tmp_path_factory, "sim_dataset", lambda root: generate_dataset(root, scenes=3, seed=7, mazes=1))
