# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= demo-out

.PHONY: demo test install bench screenshots clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,edge,dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/leukedge demo --out $(OUT)

# Two workers, one test file each at a time: about 11 minutes on 2 cores instead of 18 in one
# process (most tests wait on brokers, agents and browsers, not on the CPU).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

# The station page's pictures in docs/, from the demo's trained model and video (run `make demo` first).
screenshots: $(VENV)/.installed
	$(PY) -m leukedge.screenshots --out docs --bundle $(OUT)/bundles/custom_cnn --video $(OUT)/microscope.mp4

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
