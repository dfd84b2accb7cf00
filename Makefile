# Entry points; the scripts in .ci/ hold the logic so that CI and developers run the same thing.
VENV := .venv/bin

.PHONY: setup test lint format unit integration run

setup:
	bash .ci/setup

# Everything CI runs: setup, linters, mypy, the whole test suite.
test:
	bash .ci/run

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy --strict pazuzu tests

format:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

unit:
	$(VENV)/python -m pytest -q tests/unit

# Boots a systemd-nspawn container; needs root.
integration:
	$(VENV)/python -m pytest -q -ra -m "systemd or cgexec" tests/integration tests/host

run:
	$(VENV)/pazuzud -c contrib/pazuzu.conf

# The benchmark suite (needs root; boots a container; ~15 min, or --quick):
# make bench BENCH_ARGS="--quick --only systemd,peers"
.PHONY: bench
bench:
	$(VENV)/python -m contrib.bench.run $(BENCH_ARGS)

# The Debian package, build/pazuzu_<version>_<arch>.deb (needs root, or user namespaces):
# a virtualenv in /opt/pazuzu, the units, /etc/pazuzu, man pages, completions (contrib/README.md).
.PHONY: deb
deb:
	contrib/debian/build-deb
