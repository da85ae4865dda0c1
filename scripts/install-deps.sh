#!/usr/bin/env bash
# Installs the Debian 12 packages LiveMicro needs to build, run and test.
# Idempotent: only packages that are missing are installed. Runs as root or through sudo.
# Every package is listed with the reason it is needed.
set -euo pipefail

packages=(
  # --- build tools
  build-essential             # g++ 12 (C++17) and make
  pkg-config                  # meson finds every library below through it
  meson                       # build system (1.0)
  ninja-build                 # meson's backend
  clang-format                # the repo's .clang-format style
  # --- GStreamer 1.22
  libgstreamer1.0-dev         # core library and GstBase
  libgstreamer-plugins-base1.0-dev  # GstVideo (GstVideoFilter, video info, converters), GstApp
  libgstreamer-plugins-bad1.0-dev   # webrtcbin's library (GstWebRTC) for the orchestrator
  libgstrtspserver-1.0-dev    # gst-rtsp-server for livemicrod's RTSP mounts
  gstreamer1.0-tools          # gst-launch-1.0 / gst-inspect-1.0 (quick start, error tests)
  gstreamer1.0-plugins-base   # videoconvert, videotestsrc, appsrc/appsink
  gstreamer1.0-plugins-good   # pngenc, multifilesink, rtp payloaders, rtspsrc
  gstreamer1.0-plugins-bad    # webrtcbin, dtls, srtp
  gstreamer1.0-plugins-ugly   # x264enc (H.264, zerolatency)
  gstreamer1.0-libav          # avdec_h264 for the RTSP client side of tests
  gstreamer1.0-nice           # ICE for webrtcbin
  gstreamer1.0-x              # ximagesink/xvimagesink for the quick-start window
  # --- image analysis and slides
  libopencv-dev               # core, imgproc, imgcodecs, objdetect (QR)
  libopencv-contrib-dev       # barcode detector (cv::barcode) in OpenCV 4.6
  libopencv-dnn-dev           # build time: OpenCV's DNN module runs tumorfeatures' nucleus model
                              #   (ONNX); libopencv-dev pulls it in too, named here on purpose
  libopenslide-dev            # whole-slide images (SVS, generic tiled TIFF) for sim:///slide
  libtiff-dev                 # TIFF images and their resolution tags (µm/px) for sim:///image.tif
  libpng-dev                  # PNG slides and the slide map's PNG (hw/image/), not OpenCV's imgcodecs,
                              #   whose ~139 libraries cost every process ~200 ms at start
  libjpeg62-turbo-dev         # JPEG slides and V4L2 MJPEG frames (hw/image/); provides libjpeg.pc
  # --- orchestrator
  libsoup-3.0-dev             # HTTP + WebSocket server and client
  libjson-glib-dev            # JSON for the API, configs, ground truth and JSON Lines
  libsqlite3-dev              # sessions, users, audit log (WAL)
  etcd-server                 # the edge cloud's store (docs/edge-cloud.md); its tests start real members
  etcd-client                 # etcdctl, to read an edge cloud's keys by hand
  curl                        # scripts/edge-cloud.sh waits for etcd's /health with it
  # --- hardware
  libaravis-dev               # GenICam cameras (and Aravis' fake camera in tests)
  libusb-1.0-0-dev            # aravis-0.8.pc requires libusb-1.0.pc
  python3                     # /usr/bin/python3 runs the serial controller emulators (GRBL,
                              #   ProScan) on pseudo-terminals in the stage tests; stdlib only
  # --- tests
  libgtest-dev                # GoogleTest
  googletest                  # GoogleMock sources/headers
  libgstreamer1.0-dev         # gstreamer-check-1.0 (GstHarness) ships with the core dev package
  python3-gi                  # scripted GStreamer clients in integration tests
  gir1.2-gstreamer-1.0        # ... their typelibs
  python3-skimage             # only for the scikit-image comparison benchmark
  python3-jsonschema          # tumorfeatures JSON Lines validated against docs/tumorfeatures.schema.json in tests
  python3-numpy               # benchmarks
  python3-matplotlib          # only for the plots of the edge-versus-cloud benchmark (docs/evaluation.md)
  iproute2                    # ip netns / tc for the edge-versus-cloud benchmark's emulated sites and WAN
  # --- training the nucleus model (scripts/train-nuclei) only: never needed to build, run or
  #     test LiveMicro, which ships the trained weights
  python3-torch               # trains the U-Net (CPU, PyTorch 1.13)
  python3-onnx                # exports it as ONNX (opset 11) for OpenCV's DNN module
  python3-opencv              # rasterises the MoNuSeg outlines and resamples tiles exactly as the
                              #   C++ side does; checks the export with cv2.dnn
  chromium                    # real browser for WebRTC viewer tests (headless)
  ffmpeg                      # a third-party RTSP player in tests: ffmpeg records the stream into
                              #   MP4 (no timestamp warnings), ffprobe reads the SDP session name
  xvfb                        # a display for Chromium/Firefox tests if ever needed
  git                         # fresh-clone CI runs
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# de-duplicate
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
