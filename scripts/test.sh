#!/usr/bin/env bash
# The test command: set-up (packages, demo model), then the whole test suite in release mode
# (the demo-model tests run real perplexity and generation; debug builds are ~20x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift test -c release -Xswiftc -enable-testing "$@"
