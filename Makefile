# The two commands a newcomer needs: `make run` and `make test`. Both set the machine up first
# (scripts/setup.sh, idempotent: seconds when everything is there).

# cargo-leptos runs wasm-opt from PATH; setup installs it with the end-to-end npm packages.
export PATH := $(CURDIR)/end2end/node_modules/.bin:$(PATH)

.PHONY: setup run test watch

setup:
	./scripts/setup.sh

## Build the release app and serve it at http://127.0.0.1:3000
run: setup
	cargo leptos serve --release

## Every test: Rust unit and integration tests, then Playwright in Chromium.
test: setup
	cargo test --features ssr
	cargo leptos build --release
	cd end2end && npx playwright test

## Development loop: rebuild and reload on every change.
watch: setup
	cargo leptos watch
