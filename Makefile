# Every target bootstraps what it needs: a virtualenv with the package and its
# test extras, the Toxiproxy server built from Go modules into .tools/, Patroni in
# its own virtualenv there, HAProxy, PgBouncer, etcd and Chromium from Debian's
# packages, and an unprivileged user to run PostgreSQL as (Postgres refuses root).
# A second run downloads nothing: each step is skipped when its output exists.

PYTHON ?= python3
VENV := .venv
TOOLS := .tools
# The user Postgres runs as when make runs as root; the harness reads the same variable.
export MCP_HARNESS_PG_USER ?= mcpharness
BIN := $(VENV)/bin

.PHONY: bootstrap test unit drill bench doctor lint clean pg-user haproxy pgbouncer patroni etcd chromium

bootstrap: $(VENV)/.installed $(TOOLS)/toxiproxy-server pg-user

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Toxiproxy from its Go module, by the same code as `mcp-harness bootstrap` (harness/stack/bootstrap.py).
$(TOOLS)/toxiproxy-server: | $(VENV)/.installed
	@command -v go >/dev/null || { echo "Go is needed to build toxiproxy-server: apt-get install golang-go (Go >= 1.22)"; exit 3; }
	$(BIN)/mcp-harness bootstrap --tools-dir $(TOOLS)

# Root cannot run Postgres: create the user it runs as. Nothing to do for a normal user.
pg-user:
	@if [ "$$(id -u)" = 0 ] && ! id $(MCP_HARNESS_PG_USER) >/dev/null 2>&1; then \
		useradd --system --no-create-home --shell /usr/sbin/nologin $(MCP_HARNESS_PG_USER) && echo "created user $(MCP_HARNESS_PG_USER) to run PostgreSQL"; \
	fi

# HAProxy balances several MCP server instances (server.instances > 1); Debian's package.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null && echo "installed haproxy"; \
		else echo "HAProxy is needed for server.instances > 1: sudo apt-get install haproxy"; exit 3; fi; }

# PgBouncer between the server and the writer endpoint (topology.pooler); Debian's package,
# the pooler most Postgres deployments run. Debian starts no service in a container.
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null && echo "installed pgbouncer"; \
		else echo "PgBouncer is needed for topology.pooler: sudo apt-get install pgbouncer"; exit 3; fi; }

# Patroni (topology.failover: patroni), from PyPI into its own virtualenv of the system
# Python: it runs as the Postgres user, who may not read a Python under root's home.
# Its DCS is etcd, Debian's etcd-server (3.4, the v3 API Patroni's etcd3 client speaks).
patroni: $(TOOLS)/patroni/.installed etcd

$(TOOLS)/patroni/.installed: | $(VENV)/.installed
	@/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
		else echo "Patroni's virtualenv needs the system Python's venv: sudo apt-get install python3-venv"; exit 3; fi; }
	$(BIN)/mcp-harness bootstrap --tools-dir $(TOOLS) --patroni
	@touch $@

etcd:
	@command -v etcd >/dev/null || test -x /usr/bin/etcd || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null && echo "installed etcd-server"; \
		else echo "etcd is Patroni's DCS (topology.failover: patroni): sudo apt-get install etcd-server"; exit 3; fi; }

# Headless Chromium renders report.html in its test (tests/integration/test_report_browser.py);
# Debian's package. Optional: without it that test is skipped with a reason, the rest runs.
chromium:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && echo "installed chromium" \
				|| echo "could not install chromium: the report's browser test will be skipped"; \
		else echo "Chromium renders report.html in its test (skipped without it): sudo apt-get install chromium"; fi; }

doctor: bootstrap
	$(BIN)/mcp-harness doctor

# Unit tests on two workers (pure logic, seconds); then the real-stack tests on two
# workers, where a test runs beside another only when both are marked shares_machine
# (tests/conftest.py): two stacks on a 2-core machine would measure each other.
test: bootstrap haproxy pgbouncer patroni chromium
	$(BIN)/mcp-harness doctor
	$(BIN)/pytest -n 2 -m "not integration"
	$(BIN)/pytest -n 2 --dist loadfile -m integration

unit: bootstrap
	$(BIN)/pytest -n 2 -m "not integration"

# The quarterly drill at a size that finishes in a few minutes; DRILL_FLAGS=--full for full size.
drill: bootstrap
	$(BIN)/mcp-harness drill quarterly $(DRILL_FLAGS)

# Benchmarks (not timed tests): figures and ratios against a baseline measured in the same run,
# in results/bench/. BENCHES="generator accuracy" runs a subset.
bench: bootstrap
	$(BIN)/python -m bench $(BENCHES)

lint: bootstrap
	$(BIN)/ruff format --check harness tests bench
	$(BIN)/ruff check harness tests bench
	$(BIN)/mypy harness

clean:
	rm -rf $(VENV) $(TOOLS) results
