# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH ?= torch==2.13.0
DEMO_OUT ?= outputs/demo

.PHONY: all install demo test lint clean

all: test

install: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,ros]"
	@# compiles the CPU AMX kernel now where the CPU has AMX (else says why it is not used); never fails the install
	@$(PY) -c "from vggt_quant_core.kernels.amx_int8 import amx_fused_missing as m; print('AMX int8 kernel:', m() or 'built')"
	touch $(STAMP)

# The demo reconstructs through the ROS reconstruct node (rclpy comes with the [ros] extra); without rclpy it
# falls back to `vggt-quant demo` (the same recording, windows and scoring, through the streaming library).
demo: $(STAMP)
	@if $(PY) -c "import rclpy" 2>/dev/null; then \
		$(PY) -m vggt_quant_ros.demo --out $(DEMO_OUT); \
	else \
		echo "rclpy cannot be imported: running the demo without ROS (vggt-quant demo)"; \
		$(VENV)/bin/vggt-quant demo --out $(DEMO_OUT); \
	fi

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m flake8 vggt_quant_core vggt_quant_ros test benchmarks setup.py

clean:
	rm -rf $(VENV) outputs build *.egg-info .pytest_cache
