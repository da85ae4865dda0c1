#!/usr/bin/env python3
"""The systemd units LiveMicro installs pass `systemd-analyze verify`, pointed at
the binaries of this build (the installed paths do not exist before install).
Any warning systemd prints about a unit fails the test too."""
import os
import shutil
import subprocess
import sys
import tempfile

source, build_orchestrator = sys.argv[1], sys.argv[2]
analyze = shutil.which("systemd-analyze")
if not analyze:
    print("SKIP: systemd-analyze is not installed")
    sys.exit(77)
etcd = shutil.which("etcd")
if not etcd:
    print("SKIP: etcd is not installed (scripts/install-deps.sh installs etcd-server)")
    sys.exit(77)
values = {"@BINDIR@": build_orchestrator, "@ETCD@": etcd, "@DOCDIR@": "/usr/share/doc/livemicro"}
units = ["livemicrod.service", "livemicro-etcd.service"]
with tempfile.TemporaryDirectory() as d:
    for u in units:
        text = open(os.path.join(source, "orchestrator", "systemd", u + ".in")).read()
        for k, v in values.items():
            text = text.replace(k, v)
        if "@" in text.replace("%", ""):
            print(f"{u}: an unreplaced @VARIABLE@ is left")
            sys.exit(1)
        open(os.path.join(d, u), "w").write(text)
    r = subprocess.run([analyze, "verify", "--man=no"] + [os.path.join(d, u) for u in units],
                       capture_output=True, text=True, cwd=d)
    out = (r.stdout + r.stderr).strip()
    # Lines about other units on this machine (e.g. a host's broken unit) are not ours.
    ours = [l for l in out.splitlines() if any(u in l for u in units)]
    print(out or "systemd-analyze verify: no complaint")
    sys.exit(1 if r.returncode != 0 or ours else 0)
