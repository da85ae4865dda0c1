#!/usr/bin/env bash
# The demo: livemicrod with one virtual microscope ("demo", a generated H&E
# slide), HTTP on 127.0.0.1:8080 and RTSP on 127.0.0.1:8554.  It prints the
# viewer link of an owner session and the RTSP URL; Ctrl-C stops it.
# Extra arguments go to livemicrod (e.g. --http-port 0 --state-dir DIR).
set -euo pipefail
build="${1:-build}"
shift || true
exec meson devenv -C "$build" livemicrod --demo "$@"
