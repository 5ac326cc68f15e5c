# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH ?= torch==2.13.0
DEMO_OUT ?= outputs/demo
ARCH ?= $(shell uname -m)
COMMA := ,
# The ROS wheels (ros-rclpy, ...) are built for x86_64 only: elsewhere (aarch64: Jetson, Graviton) the install
# leaves them out and says so; the node then needs ROS 2's own rclpy, and `make demo` runs without ROS.
EXTRAS := dev$(if $(filter x86_64,$(ARCH)),$(COMMA)ros)

.PHONY: all install demo test test-isa lint clean

all: test

install: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@$(if $(filter x86_64,$(ARCH)),,echo "ROS wheels left out: they exist for x86_64 only, this is $(ARCH)")
	@# compiles the CPU AMX kernel now where the CPU has AMX (else says why not, e.g. on ARM); never fails the install
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

# The quantization, kernel and checkpoint tests as two other CPUs run them: "AVX-512 without AMX" (AMD Zen 4,
# Ice Lake) and "AVX2" (no VNNI). VGGTQ_MAX_CPU_ISA hides CPU features from this library's backend choice,
# ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY from oneDNN's and ATen's kernels; all are read at process start.
# A CPU cannot pose as a bigger one: each run is skipped, with a line saying so, where the CPU lacks its ISA.
# test_cpu_isa's cap test is left out: it runs every cap itself, in fresh processes, within `make test`.
ISA_TESTS := test/core/kernels test/core/quant/test_backends.py test/core/quant/test_linear.py \
	test/core/quant/test_checkpoint.py -k "not under_the_isa_caps"

test-isa: $(STAMP)
	@if grep -qw avx512f /proc/cpuinfo; then \
		echo "== AVX-512 without AMX: VGGTQ_MAX_CPU_ISA=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"; \
		VGGTQ_MAX_CPU_ISA=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 $(PY) -m pytest -q $(ISA_TESTS) || exit 1; \
	else echo "== AVX-512 without AMX: skipped (this CPU has no AVX-512)"; fi
	@if grep -qw avx2 /proc/cpuinfo; then \
		echo "== AVX2: VGGTQ_MAX_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2"; \
		VGGTQ_MAX_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q $(ISA_TESTS); \
	else echo "== AVX2: skipped (not an x86 CPU with AVX2)"; fi

lint: $(STAMP)
	$(PY) -m flake8 vggt_quant_core vggt_quant_ros test benchmarks setup.py

clean:
	rm -rf $(VENV) outputs build *.egg-info .pytest_cache
