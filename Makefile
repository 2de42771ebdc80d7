# Two commands a newcomer needs: `make run` (the whole stack, CPU, default model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; GPU hosts install their own torch first and set TORCH_SPEC= (empty).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install model run test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

model: install
	$(VENV)/bin/llmq models pull

run: model
	$(VENV)/bin/llmq up

test: model
	$(PY) -m pytest -q
