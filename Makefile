# `make test` and `make demo` work on a fresh machine: they build .venv, install torch==2.13.0 only
# when the venv cannot import torch, then the requirements (which never list torch).
VENV ?= .venv
PY := $(VENV)/bin/python
FIND_LINKS := $(shell [ -d /opt/wheels ] && echo --find-links /opt/wheels)
STAMP := $(VENV)/.installed

.PHONY: test demo bench clean

$(STAMP): requirements.txt requirements-test.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(PY) -m pip install -q $(FIND_LINKS) -r requirements.txt -r requirements-test.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

demo: $(STAMP)
	$(PY) -m unifusion_core demo --out demo_out

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) demo_out
