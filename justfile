# Every developer and CI entry point of the suite. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools installed by `just tools` (grpcurl, just) come first on PATH.
export PATH := justfile_directory() / ".tools/bin:" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install the third-party tools the recipes and tests drive into .tools/ (idempotent).
tools:
    scripts/install-tools

# Run the suite locally on embedded defaults: user service (127.0.0.1:50051), order service (127.0.0.1:50052) and edge gateway (127.0.0.1:8443) with dev certificates and token key from .dev/certs, SQLite in .data/, admin ports 9101-9103; prints a grpcurl command with a token.
up:
    scripts/up

# Create or refresh the development CA and certificates in .dev/certs (`just dev-certs --renew` re-issues them; running services reload them).
dev-certs *ARGS:
    cargo run --quiet -p suite-devcerts --bin dev-certs -- --dir .dev/certs {{ARGS}}

# Apply both services' database migrations (USER_DATABASE_URL and ORDER_DATABASE_URL, or the embedded SQLite defaults).
migrate:
    env -u DATABASE_URL ${USER_DATABASE_URL:+DATABASE_URL="$USER_DATABASE_URL"} cargo run -p user-service -- migrate
    env -u DATABASE_URL ${ORDER_DATABASE_URL:+DATABASE_URL="$ORDER_DATABASE_URL"} cargo run -p order-service -- migrate

# Run every test against real PostgreSQL, Redis and grpcurl (a backend that is unreachable is skipped loudly; with CI=true it fails the run).
test: tools
    cargo run --quiet -p suite-testkit --bin backends
    cargo nextest run --workspace --no-fail-fast

# Format the code.
fmt:
    cargo fmt --all

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Lint (strict), render and validate every Helm chart with Helm v4's engine and kubernetes-validate, inspect the rendered objects, then prove the checker catches deliberate faults (tools from scripts/install-chart-tools).
charts:
    scripts/install-chart-tools
    PYTHONDONTWRITEBYTECODE=1 .tools/charts-venv/bin/python tests/charts/chartcheck.py --quiet
    cd tests/charts && PYTHONDONTWRITEBYTECODE=1 ../../.tools/charts-venv/bin/python -m pytest -q -p no:cacheprovider

# What CI runs: lints, the chart checks, then the whole test suite.
ci: lint charts test

# Rewrite proto/wire-baseline.txt from the current protos, after a deliberate API change; it names any wire break it accepts. Commit the baseline with the change.
contracts-update:
    cargo run --quiet -p suite-contracts --bin contracts -- update-baseline --baseline proto/wire-baseline.txt

# GetUser cache-hit throughput and latency beside a trivial endpoint, plaintext and mutual TLS, and TLS handshakes/s; figures go in BENCHMARKS.md.
bench:
    cargo build --release -p user-service -p suite-tests --bins
    target/release/suite-bench

# CreateOrder and GetOrder end to end over mutual TLS, and the client stack's overhead beside a bare tonic client; figures go in BENCHMARKS.md.
bench-orders *ARGS:
    cargo build --release -p user-service -p order-service -p suite-tests --bins
    target/release/order-bench {{ARGS}}

# GetUser through the edge gateway and through nginx grpc_pass (h2load, both installed from Debian packages into .tools/); `--targets gateway,gateway-traced,gateway-sampled` compares trace export at 100% and 10% sampling with none instead; figures go in BENCHMARKS.md.
bench-gateway *ARGS: tools
    scripts/install-bench-tools
    cargo build --release -p user-service -p edge-gateway -p suite-devcerts --bins
    cargo build --release -p suite-tests --bin otlp-sink
    python3 tests/bench/gateway_vs_nginx.py {{ARGS}}
