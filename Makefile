# distillstudy: `make study` runs the default study, `make test` the whole suite (what CI
# runs), `make test-fast` the unit tests only. Each creates .venv (pinned: pyproject.toml +
# constraints.txt) when it is missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands (distillstudy, snakemake, dvc) come from the venv, also inside DVC stages.
export PATH := $(BIN):$(PATH)

.PHONY: study test test-fast lint code-deps repro report-snakemake lock clean-study venv pull bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e ".[test]"
	@# Byte-compile on every core: pip compiles one file at a time (measured here: install
	@# with compiling 163 s; without 68 s + this 34 s). Like pip, ignore files that do not
	@# compile (third-party test fixtures written for other Python versions).
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@touch $@

## study: run (or resume) the default study through DVC + Snakemake; writes reports/index.html
study: $(STAMP)
	dvc repro
	@echo "Open reports/index.html"

## test: the whole suite, what CI runs: unit, rule-level, end-to-end (Snakemake), DVC,
##       DVC remote, SLURM (as root) and headless-Chromium tests. The tiny study is
##       trained once per session and shared; two pytest-xdist workers, tests that share a
##       costly module fixture (one SLURM cluster, ...) on one of them, in the order
##       tests/conftest.py sets. ≤ 10 min on 2 cores.
test: $(STAMP)
	python -m pytest -q -n 2 --dist loadgroup --durations=15

## test-fast: the tests that run no study (not marked slow or slurm): unit tests, the
##            report in headless Chromium, dvc plots, the SLURM profiles' dry run. ≤ 2 min.
test-fast: $(STAMP)
	python -m pytest -q -m "not slow and not slurm"

## lint: snakemake --lint, the package's layers (import-linter), dvc.yaml's code deps current
lint: $(STAMP)
	snakemake --lint
	lint-imports
	python workflow/codedeps.py --check

## code-deps: rewrite dvc.yaml's code deps from the package's imports (after adding/moving an import)
code-deps: $(STAMP)
	python workflow/codedeps.py --write

## venv: only create .venv (pinned), e.g. on a cluster login node
venv: $(STAMP)

## pull: after `git clone`/`git pull`: fetch data, models and reports from the DVC remote,
##       then mark them up to date for Snakemake (only if they match dvc.lock)
pull: $(STAMP)
	dvc pull
	@test "$$(dvc status --json)" = "{}" || { dvc status; \
	  echo "make pull: outputs differ from dvc.lock, not marking them up to date (make study re-runs what changed)"; exit 1; }
	snakemake --touch --quiet

## report-snakemake: Snakemake's own HTML report of the last run
report-snakemake: $(STAMP)
	snakemake --report reports/snakemake-report.html

## bench: the grid engine against the usual KD loops and the matmul limit -> reports/bench.json
##        (~30-40 min; `python benchmarks/run.py --quick`: ~7 min)
bench: $(STAMP)
	python benchmarks/run.py

## lock: re-pin every installed package after changing pyproject.toml
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch==' > constraints.txt.new
	echo "torch==2.13.0" >> constraints.txt.new
	sort -f constraints.txt.new -o constraints.txt.new
	{ head -2 constraints.txt; cat constraints.txt.new; } > constraints.txt.tmp  # keep the header
	rm constraints.txt.new && mv constraints.txt.tmp constraints.txt

## clean-study: remove every study output (DVC cache and git-tracked files stay)
clean-study:
	rm -rf data/prepared models/teachers models/students reports/index.html reports/figures \
	       reports/plots reports/walkthrough reports/results.csv logs .snakemake
