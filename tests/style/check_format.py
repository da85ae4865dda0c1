#!/usr/bin/env python3
"""Fails when a C/C++ file of the tree is not formatted as .clang-format says.

Runs clang-format --dry-run --Werror over every .c, .cpp and .h file under
gst-plugins/, hw/, orchestrator/ and tests/ and names the files that differ,
with the command that formats them.
"""
import os
import shutil
import subprocess
import sys

ROOTS = ("gst-plugins", "hw", "orchestrator", "tests")
EXTENSIONS = (".c", ".cpp", ".h")


def sources(top):
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(top, root)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("corpus", "build"))
            for name in sorted(filenames):
                if name.endswith(EXTENSIONS):
                    yield os.path.join(dirpath, name)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tool = shutil.which("clang-format")
    if not tool:
        print("clang-format is not installed (scripts/install-deps.sh installs it)")
        return 1
    files = list(sources(top))
    bad = []
    for path in files:
        r = subprocess.run([tool, "--style=file", "--dry-run", "--Werror", path],
                           cwd=top, capture_output=True, text=True)
        if r.returncode != 0:
            bad.append(os.path.relpath(path, top))
    if bad:
        print("not formatted as .clang-format says (%d of %d files):" % (len(bad), len(files)))
        for b in bad:
            print("  " + b)
        print("format them with: clang-format -i " + " ".join(bad))
        return 1
    print("%d files formatted as .clang-format says" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
