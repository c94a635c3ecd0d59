# Quick start:  make run PHOTOS=~/Pictures      |      make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PHOTOS ?=
LIBRARY ?= peoplemap-library
MODEL  ?=
PORT   ?= 8501

.PHONY: run test venv clean

# torch==2.13.0 first: on these machines it is a CPU wheel on disk; any other spec pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[all,test]'
	$(VENV)/bin/peoplemap models --fetch
	touch $@

venv: $(VENV)/.installed

run: venv
	@if [ -z "$(PHOTOS)" ]; then echo "Usage: make run PHOTOS=/path/to/photos [LIBRARY=dir] [MODEL=face|body|mobilenetv2]"; exit 2; fi
	$(VENV)/bin/peoplemap index "$(PHOTOS)" --library "$(LIBRARY)" $(if $(MODEL),--model "$(MODEL)")
	$(VENV)/bin/peoplemap cluster --library "$(LIBRARY)"
	$(VENV)/bin/peoplemap ui --library "$(LIBRARY)" --port $(PORT)

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
