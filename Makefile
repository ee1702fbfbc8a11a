# Two commands for a fresh machine: `make run` (the gateway on an embedded default, no external
# service) and `make test` (the whole suite, on the local PostgreSQL and RabbitMQ).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672//

.PHONY: run demo test install browser prometheus dashboard-shot lint bench audit clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

# The port first (a clash is one line: make run PORT=8001), then web, worker and beat from the
# Procfile; Ctrl-C stops them cleanly (hitl_gateway/launch.py).
run: install
	@$(BIN)/python -m hitl_gateway.launch --check-port $(PORT)
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m hitl_gateway.launch --port $(PORT)

# A whole HITL session on this machine, no external service: the gateway, both stand-ins (with an
# end-user chat and an agent desk) and a demo integration. Ctrl-C stops it; each run starts afresh.
demo: install
	$(BIN)/python -m demo $(DEMO_ARGS)

# Browser tests drive Debian's Chromium; installed once, from Debian's packages (needs root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# Debian's Prometheus for `make dashboard-shot`; installed once, from Debian's packages (needs root).
prometheus:
	@command -v prometheus >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)

# docs/screenshots/metrics-dashboard.png: a gateway under four minutes of traffic with faults,
# scraped by a real Prometheus, every query of docs/grafana-dashboard.json run and drawn (about 5 min).
# DASHBOARD_ARGS="--seconds 90 --sessions 12" for a shorter one.
dashboard-shot: install browser prometheus
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/python -m dashboard_shot $(DASHBOARD_ARGS)

test: install browser
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# 200 sessions, 5,000 messages, injected faults, a SIGKILLed worker and a web restart.
# CHAOS_ARGS="--sessions 20 --messages 400" for a smaller run.
chaos: install
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/python -m chaos $(CHAOS_ARGS)

# Issue 16's figures beside same-run references; BENCH_ARGS="--rounds 20 --seed-messages 100000" is shorter.
bench: install
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(BIN)/python -m bench $(BENCH_ARGS)

# Known vulnerabilities in the pinned requirements and in the virtualenv as installed (transitive
# dependencies included). Needs the advisory databases (PyPI's, OSV): run where they are reachable.
# --strict: a package that cannot be audited fails the run. No --require-hashes: the pins have none.
PIP_AUDIT_VERSION ?= 2.10.1
audit: install
	$(BIN)/pip install --quiet pip-audit==$(PIP_AUDIT_VERSION)
	$(BIN)/pip-audit --strict --progress-spinner off -r requirements.txt
	$(BIN)/pip-audit --strict --progress-spinner off --skip-editable

clean:
	rm -rf var
