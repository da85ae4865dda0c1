#!/usr/bin/env bash
# The demo: the virtual microscope over the generated H&E slide.
# With a display: a live window, touring the slide.  Without: PNG frames.
set -euo pipefail
build="${1:-build}"
devenv() { meson devenv -C "$build" "$@"; }

if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${CI:-}" ]; then
  echo "LiveMicro demo: live view of the virtual microscope (close the window to quit)"
  exec meson devenv -C "$build" gst-launch-1.0 \
    microscopesrc microscope=sim://synthetic objective=10 \
    ! video/x-raw,width=1280,height=720,framerate=30/1 ! videoconvert ! autovideosink
fi

out="$(pwd)/demo-frames"
mkdir -p "$out"
echo "LiveMicro demo: no display, writing frames of the virtual microscope to $out"
shot() {  # name, then microscopesrc properties
  local name="$1"; shift
  devenv gst-launch-1.0 -q microscopesrc microscope=sim://synthetic num-buffers=1 "$@" \
    ! video/x-raw,width=1280,height=720 ! videoconvert ! pngenc ! filesink location="$out/$name.png"
  echo "  $out/$name.png"
}
shot tissue-4x objective=4
shot tissue-10x objective=10
shot tissue-40x objective=40
shot tissue-40x-defocused objective=40 z-um=1012
shot label-4x objective=4 x-um=9000 y-um=10000
echo "Done. Open the PNGs above; 'label-4x' shows the fake patient label a guest must never see."
