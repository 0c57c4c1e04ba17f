#!/usr/bin/env bash
# Everything the tests need, then every test (unit and end-to-end, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --features peapod/fault-injection -- --test-threads=2
