# The two commands a new user runs: `make setup`, then `make test`.
VENV := .venv

.PHONY: setup test
setup:
	@bash .ci/find-python >/dev/null
	"$$(bash .ci/find-python)" -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@echo "ready: $(VENV)/bin/llmsm --help"

test:
	$(VENV)/bin/python -m pytest -q
