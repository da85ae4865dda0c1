#!/usr/bin/env bash
# LiveMicro quick start: installs what is missing (Debian 12), builds, and then
#   run   starts livemicrod --demo: a virtual microscope served over WebRTC
#         (viewer link printed) and RTSP on 127.0.0.1
#   test  runs the whole test suite and ends with "N passed, N failed[, N skipped]"
# Run as root or as a user with sudo (only the package install needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in run|test) ;; *) echo "usage: $0 run|test" >&2; exit 2;; esac

./scripts/install-deps.sh

build=build
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=debugoptimized
fi
meson compile -C "$build"

if [ "$mode" = test ]; then
  status=0
  # Benchmarks are run on purpose (meson test --benchmark), not here.
  meson test -C "$build" --print-errorlogs --num-processes 2 || status=$?
  python3 scripts/test-summary.py "$build/meson-logs" || status=1
  exit $status
fi

shift
exec ./scripts/demo.sh "$build" "$@"
