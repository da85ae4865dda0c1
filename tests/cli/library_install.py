#!/usr/bin/env python3
"""A foreign program against a staged `meson install`, as docs/library.md shows it.

Writes the page's ```c stagemeta.c block to a fresh directory (with a link
`build` to this build directory), runs the page's ```sh staged block there
(set -eu -o pipefail): meson install into a stage, pkg-config with the stage
as sysroot, cc, and the program itself, with no GStreamer or LiveMicro path
of the build tree in the environment.  What it prints must match the
```text block after it.  Then checks that what ran came from the stage: the
compiler flags point into it, and GStreamer loaded the stage's plugin; and
that the programs are there (bin/livemicroctl runs, bin/livemicrod and
libexec/livemicro-worker exist).

usage: library_install.py DOC BUILD_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from docblocks import blocks, matches

SKIP = 77


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    doc, build = sys.argv[1], os.path.abspath(sys.argv[2])
    for tool in ("meson", "cc", "pkg-config", "gst-inspect-1.0"):
        if not shutil.which(tool):
            print(f"{tool} is not installed")
            return SKIP
    page = blocks(doc)
    program = [t for i, t in page if i == "c stagemeta.c"]
    staged = [(k, t) for k, (i, t) in enumerate(page) if i == "sh staged"]
    if len(program) != 1 or len(staged) != 1:
        print(f"{doc}: expected one ```c stagemeta.c block and one ```sh staged block")
        return 1
    k, script = staged[0]
    expected = page[k + 1][1] if k + 1 < len(page) and page[k + 1][0] == "text" else None
    if expected is None:
        print(f"{doc}: the ```sh staged block has no ```text block after it")
        return 1
    # The build tree's own settings would hide what the install lacks.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GST_PLUGIN", "GST_REGISTRY", "LD_LIBRARY_PATH", "PKG_CONFIG", "LIVEMICRO"))}
    with tempfile.TemporaryDirectory(prefix="livemicro-install-") as work:
        os.symlink(build, os.path.join(work, "build"))
        with open(os.path.join(work, "stagemeta.c"), "w", encoding="utf-8") as f:
            f.write(program[0] + "\n")
        env["GST_REGISTRY"] = os.path.join(work, "registry.bin")
        # The page's block, then what the test checks about where things came from.
        check = ('\necho "@@cflags $(pkg-config --cflags livemicro-1.0)"\n'
                 'echo "@@plugin $(LD_LIBRARY_PATH="$LIBDIR" GST_PLUGIN_PATH="$LIBDIR/gstreamer-1.0" '
                 'gst-inspect-1.0 microscopesrc | grep -m1 Filename)"\n'
                 'echo "@@stage $STAGE"\n'
                 'echo "@@ctl $(LD_LIBRARY_PATH="$LIBDIR" "$(find "$STAGE" -path "*/bin/livemicroctl")" --help | head -1)"\n'
                 'echo "@@programs $(find "$STAGE" -path "*/bin/livemicrod" -o -path "*/libexec/livemicro-worker" | wc -l)"\n')
        # The stage goes when the shell ends, however it ends (rm does not follow its links).
        prologue = "set -eu -o pipefail\ntrap 'rm -rf \"${STAGE:-}\"' EXIT\n"
        r = subprocess.run(["bash", "-c", prologue + script + check], cwd=work, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        out = r.stdout
        if r.returncode != 0:
            print(f"the staged block failed (exit status {r.returncode}):\n{script}\n--- printed:\n{out}")
            return 1
        failures = []
        missing = matches(expected, out)
        if missing is not None:
            failures.append(f"no line of the output matches: {missing}")
        stage = re.search(r"^@@stage (.+)$", out, re.M).group(1)
        cflags = re.search(r"^@@cflags (.*)$", out, re.M).group(1)
        plugin = re.search(r"^@@plugin (.*)$", out, re.M).group(1)
        if f"-I{stage}/" not in cflags or "livemicro-1.0" not in cflags:
            failures.append(f"pkg-config --cflags livemicro-1.0 does not point into the stage: {cflags}")
        if stage not in plugin:
            failures.append(f"GStreamer did not load the stage's plugin: {plugin}")
        if not re.search(r"^@@ctl usage: livemicroctl", out, re.M):
            failures.append("the staged bin/livemicroctl does not run")
        if not re.search(r"^@@programs 2$", out, re.M):
            failures.append("bin/livemicrod or libexec/livemicro-worker is not in the stage")
        if failures:
            print("\n".join(failures) + "\n--- printed:\n" + out)
            return 1
        print(out)
    print("docs/library.md's program builds and runs against a staged install")
    return 0


if __name__ == "__main__":
    sys.exit(main())
