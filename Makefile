# Flotilla developer entry points. Needs only Node 20 (with npm) and make.
#   make test                           build, then every test under test/ (unit, sim, scenario, integration)
#   make test MOCHA_ARGS="--grep raft"  a subset of the tests
#   make sim SEEDS=50                   the seeded cluster simulator
#   make up                             a local 3-controller quorum in ./data (pretty logs on a terminal)
#   make image                          the container image (Docker installed and started if absent)
#   make compose-up / compose-down      3 controllers + 3 brokers in docker-compose (deploy/compose)
#   make chaos [SEED=n] [DURATION=s] [BROKERS=5]  the compose check and the seeded fault-injection suite

SEEDS ?= 1000
MOCHA_ARGS ?=
BIN := node_modules/.bin
# depcruise refuses folders that do not exist (git keeps no empty folders).
SRC_DIRS := $(wildcard controller broker shared client cli test bench)
STAMP := node_modules/.install-stamp

.PHONY: install build test sim lint up bench bench-data-plane clean image compose-up compose-down chaos

install: $(STAMP)

# Reinstall only when the lock file changes; npm ci starts from an empty node_modules.
$(STAMP): $(wildcard package-lock.json)
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	touch $@

build: install
	$(BIN)/tsc -p tsconfig.json

test: build
	$(BIN)/mocha $(MOCHA_ARGS)

sim: build
	node dist/test/sim/run-sim.js --seeds $(SEEDS)

lint: install
	$(BIN)/tsc -p tsconfig.json --noEmit
	$(BIN)/depcruise --config .dependency-cruiser.js $(SRC_DIRS)

# Pretty logs only on a terminal; FLOTILLA_PRETTY=0 make up keeps JSON.
up: build
	if [ -t 1 ]; then export FLOTILLA_PRETTY="$${FLOTILLA_PRETTY:-1}"; fi; \
	exec node dist/cli/main.js cluster up --controllers 3 --brokers 3 --data-dir ./data

# BENCH_FLAGS passes options to run-all (e.g. BENCH_FLAGS="--only data-plane", see bench/README.md).
bench: build
	node dist/bench/run-all.js $(BENCH_FLAGS)

bench-data-plane: build
	node dist/bench/run-all.js --only data-plane $(BENCH_FLAGS)

clean:
	rm -rf dist

# --- containers and chaos (deploy/, test/chaos/) -------------------------------------------
# Chaos run: SEED replays a fault schedule (empty = a fresh random seed, printed);
# DURATION is the fault phase in seconds (empty = the CI-sized schedule, every fault once);
# BROKERS=5 adds the two-brokers-at-once fault (kill-brokers) to the schedule.
SEED ?=
DURATION ?=
BROKERS ?=
COMPOSE_FILE := deploy/compose/docker-compose.yml
COMPOSE_PROJECT ?= flotilla
COMPOSE := deploy/scripts/compose.sh -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE)

# Builds only what changed (the image tag is a hash of its content); prints the tag.
image: build
	deploy/scripts/build-image.sh

compose-up: image
	$(COMPOSE) up -d
	deploy/scripts/compose-wait.sh

compose-down:
	$(COMPOSE) down -v --remove-orphans

chaos: image
	$(BIN)/mocha --no-config --exit --timeout 600000 --node-option enable-source-maps \
		--reporter ./dist/test/support/summary-reporter.js dist/test/chaos/compose.chaos.js
	node --enable-source-maps dist/test/chaos/run-chaos.js \
		$(if $(SEED),--seed $(SEED)) $(if $(DURATION),--duration-s $(DURATION)) $(if $(BROKERS),--brokers $(BROKERS))
