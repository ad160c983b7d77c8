# The two commands a new user runs: `make setup`, then `make test`.
VENV := .venv

.PHONY: setup test
setup:
	@bash .ci/find-python >/dev/null
	"$$(bash .ci/find-python)" -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@# Bytecode for llmsm's own modules, as a regular install has it: an editable install run
	@# with PYTHONDONTWRITEBYTECODE set compiles every module again in every process (~15 ms
	@# of each status line, ~100 ms of each `llmsm watch` start-up). Stale files are ignored.
	$(VENV)/bin/python -m compileall -q addons analytics cli llmsm
	@echo "ready: $(VENV)/bin/llmsm --help"

test:
	$(VENV)/bin/python -m pytest -q
