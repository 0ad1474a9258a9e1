# trajplan: `make demo` runs the whole pipeline offline on CPU, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel; on a CUDA machine install torch yourself first (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test lint demo bench clean gl-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,video,tensorboard,wandb,sb3,mazes,ray,hub]"
	touch $@

install: $(VENV)/.installed

# Headless OpenGL for MuJoCo videos (Debian/Ubuntu, as root): EGL (MUJOCO_GL=egl, the
# default) and OSMesa (MUJOCO_GL=osmesa), both software-rendered by Mesa.
GL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libopengl0 libosmesa6
gl-deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(GL_PACKAGES)

# One worker per core (pytest-xdist), each test file on one worker (its module fixtures
# built once); the 15 slowest tests are listed at the end.
test: install
	$(PY) -m pytest -q -x -n auto --dist loadfile --durations=15 tests

lint: install
	$(VENV)/bin/ruff check trajplan tests scripts
	$(VENV)/bin/ruff format --check trajplan tests scripts

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_plan.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo
