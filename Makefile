# The two commands a newcomer needs: `make run` and `make test`. Both set the machine up first
# (scripts/setup.sh, idempotent: seconds when everything is there).

# cargo-leptos runs wasm-opt from PATH; setup installs it with the end-to-end npm packages.
export PATH := $(CURDIR)/end2end/node_modules/.bin:$(PATH)

.PHONY: setup run test watch bench

setup:
	./scripts/setup.sh

## Build the release app and serve it at http://127.0.0.1:3000; ARGS="..." passes flags to the
## server, e.g. ARGS="--addr 0.0.0.0:3000 --tls-self-signed" for a call between two machines.
run: setup
	cargo leptos serve --release --precompress -- $(ARGS)

## Every test: Rust unit and integration tests, Playwright in Chromium, and the benchmarks in
## their quick mode (numbers are printed, not asserted; this keeps the bench from rotting).
test: setup
	cargo test --features ssr
	cargo leptos build --release --precompress
	cd end2end && npx playwright test
	bench/run.sh --quick

## The full benchmark run behind docs/performance.md.
bench: setup
	bench/run.sh

## Development loop: rebuild and reload on every change.
watch: setup
	cargo leptos watch
