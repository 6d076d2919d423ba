# Flotilla developer entry points. Needs only Node 20 (with npm) and make.
#   make test                           build, then every test under test/ (unit, sim, scenario, integration)
#   make test MOCHA_ARGS="--grep raft"  a subset of the tests
#   make sim SEEDS=50                   the seeded cluster simulator
#   make up                             a local 3-controller quorum in ./data (pretty logs on a terminal)

SEEDS ?= 1000
MOCHA_ARGS ?=
BIN := node_modules/.bin
# depcruise refuses folders that do not exist (git keeps no empty folders).
SRC_DIRS := $(wildcard controller broker shared client cli test bench)
STAMP := node_modules/.install-stamp

.PHONY: install build test sim lint up bench bench-data-plane clean

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
