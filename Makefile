# The two commands of the README (a fresh Debian 12 / Python 3.11 machine needs only make and python3-venv):
#   make demo   set up .venv, then the main job: camera_node + vilasr_agent on the bundled z-up demo scene,
#               one query over ROS 2 (DDS on loopback), the answer, the Nav2 target pose and its ground-truth error
#   make test   set up .venv, then the tests (what CI runs)
# The setup is idempotent (scripts/setup.sh): a second run reinstalls nothing that did not change.

VENV ?= .venv
BIN := $(VENV)/bin
DEMO_QUERY ?= {"id": "demo", "question": "Where is the sofa? Go to it.", "target": "sofa"}

.PHONY: setup demo test clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(BIN)/vilasr agent --localhost --source sim:demo --query '$(DEMO_QUERY)'

# Two pytest-xdist workers (CI has 2 cores; each worker's torch/OpenMP gets its share: test/conftest.py).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=25

clean:
	rm -rf $(VENV) build *.egg-info runs
