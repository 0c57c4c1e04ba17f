#!/usr/bin/env bash
# The main job: set up, import the test image, run the daemon with embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
PEAPOD_PROFILE=release bash scripts/setup.sh
./target/release/peapod image import /var/lib/peapod/test-image/busybox --tag busybox:1.35
exec ./target/release/peapod daemon
