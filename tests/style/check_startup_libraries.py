#!/usr/bin/env python3
"""Fails when a runtime binary loads a library kept out of it for its start time.

OpenCV's imgcodecs module brings ~139 shared libraries (GDAL, GDCM, OpenEXR,
...) on Debian 12 and ~200 ms in the dynamic loader into every process that
loads it; a killed media worker must be back within 1 s.  The runtime reads
and writes images through hw/image/ instead.  This lists what the dynamic
loader loads for each binary given (the libraries they need, and what those
need: LD_TRACE_LOADED_OBJECTS, as ldd) and names any that is refused.

Usage: check_startup_libraries.py BINARY...
"""
import os
import subprocess
import sys

REFUSED = ("libopencv_imgcodecs", "libopencv_highgui", "libopencv_videoio")


def loaded(path):
    # ldd: what the dynamic loader loads for an executable or a shared library.
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def main():
    bad = 0
    for path in sys.argv[1:]:
        libs = loaded(path)
        refused = sorted({lib for lib in libs if lib.startswith(REFUSED)})
        print(f"{os.path.basename(path)}: {len(libs)} shared objects at start")
        if refused:
            bad += 1
            print(f"  loads {', '.join(refused)}: use livemicro/hw/image_codec.h, not OpenCV's imgcodecs")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
