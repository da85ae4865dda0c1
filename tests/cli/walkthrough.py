#!/usr/bin/env python3
"""Runs docs/cli.md as written, against a real livemicrod on 127.0.0.1.

Every ```sh block of the page runs, in order, in one bash (set -eu -o
pipefail: a failing command fails the test) in a fresh directory, with
livemicroctl and livemicrod of this build first on PATH.  The ```sh setup
block (which starts a daemon on the documented ports) is the one exception:
this test starts the daemon itself on free ports and exports the same
variables the block does.  A ```text block right after a ```sh block is what
those commands print (stdout and stderr): each of its lines must match one
line of the output, in order, where "…" matches anything and a run of
spaces matches any run of spaces.

Then a few checks the page describes but cannot show deterministically:
`command --wait` prints "failed: …" and exits 1 for a command a stop
cancelled, and bad arguments exit 2 with a message.

usage: walkthrough.py DOC   (env LIVEMICROD, LIVEMICROCTL: the built programs)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from docblocks import blocks, matches

SKIP = 77
ADMIN_TOKEN = "walkthrough-admin-token-0123456789"


class Daemon:
    def __init__(self, livemicrod, workdir):
        env = dict(os.environ, LIVEMICRO_ADMIN_TOKEN=ADMIN_TOKEN)
        self.log = open(os.path.join(workdir, "livemicrod.log"), "w+")
        self.proc = subprocess.Popen(
            [livemicrod, "--demo", "--http-port", "0", "--rtsp-port", "0",
             "--state-dir", os.path.join(workdir, "state")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = None
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"livemicrod: HTTP (http://127\.0\.0\.1:\d+)", self.text())
            if m:
                self.url = m.group(1)
                break
            time.sleep(0.1)
        if not self.url:
            raise RuntimeError("livemicrod did not start:\n" + self.text())
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                    if json.load(r).get("microscopes", {}).get("demo") == "online":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the demo microscope did not come online:\n" + self.text())

    def text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_page(doc, env, workdir):
    """Runs the page's sh blocks; returns a list of failures."""
    marker = "@@livemicro-walkthrough-block@@"
    script = ["set -eu -o pipefail"]
    steps = []  # (sh text, expected text or None)
    page = blocks(doc)
    setup = [t for i, t in page if i == "sh setup"]
    if len(setup) != 1 or "livemicrod --demo" not in setup[0] or "LIVEMICRO_SERVER" not in setup[0]:
        return [f"{doc}: expected one ```sh setup block starting livemicrod --demo and setting LIVEMICRO_SERVER"]
    for k, (info, text) in enumerate(page):
        if info != "sh":
            continue
        expected = page[k + 1][1] if k + 1 < len(page) and page[k + 1][0] == "text" else None
        steps.append((text, expected))
        script.append(f"echo {marker}")
        script.append(text)
    script.append(f"echo {marker}")
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    outputs = r.stdout.split(marker + "\n")[1:]
    completed = len(outputs) - 1  # blocks followed by their marker
    failures = []
    for n, (text, expected) in enumerate(steps):
        if n >= completed:
            failures.append(f"block {n + 1} failed (exit status {r.returncode}):\n{text}\n"
                            f"--- printed:\n{outputs[n] if n < len(outputs) else r.stdout[-3000:]}")
            break
        if expected is not None:
            missing = matches(expected, outputs[n])
            if missing is not None:
                failures.append(f"block {n + 1}:\n{text}\n--- printed:\n{outputs[n]}--- no line matches: {missing}")
    if r.returncode != 0 and not failures:
        failures.append(f"the page's commands exited with {r.returncode}:\n{r.stdout[-3000:]}")
    return failures


def ctl(env, *args, cwd=None):
    return subprocess.run([env["LIVEMICROCTL"], *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def check_wait_reports_failures(env):
    """A command a stop cancels: --wait prints failed: … and exits 1."""
    owner = json.loads(ctl(env, "--json", "session", "create", "--user", "wanda", "--role", "owner").stdout)
    e = dict(env, LIVEMICRO_TOKEN=owner["token"])
    lease = json.loads(ctl(e, "--json", "control", "request").stdout)["lease"]
    for attempt in range(3):
        # An autofocus runs (~1 s); a move waits behind it; a stop cancels the move.
        assert ctl(e, "command", "--lease", lease, "autofocus").returncode == 0
        waiting = subprocess.Popen([e["LIVEMICROCTL"], "command", "--lease", lease, "move_by", "10", "10", "--wait"],
                                   env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)
        stop = ctl(e, "command", "--lease", lease, "stop", "--wait")
        out, err = waiting.communicate(timeout=120)
        if stop.stdout.strip() != "done":
            return [f"stop --wait printed {stop.stdout!r} {stop.stderr!r}"]
        if out.startswith("failed: cancelled: a stop came first") and waiting.returncode == 1:
            break
        if out.strip() == "done" and attempt < 2:
            continue  # the autofocus ended before the stop came (a loaded machine): again
        return [f"a cancelled command's --wait printed {out!r} {err!r}, exit {waiting.returncode}"]
    failures = []
    status = ctl(e, "--json", "command-status", "999999")
    if status.returncode != 1 or "no command '999999'" not in status.stderr:
        failures.append(f"an unknown command id: {status.returncode} {status.stderr!r}")
    for args, needle in [(["command", "--lease", lease, "move", "x", "1"], "non-numeric"),
                         (["command", "--lease", lease, "teleport"], "unknown command 'teleport'"),
                         (["annotate", "region", "1,2", "3;4"], "'3;4' is not X,Y"),
                         (["annotations", "SESSION"], "--session ID"),
                         (["command", "--lease", lease, "autofocus", "--wait", "--timeout", "-1"], "--timeout"),
                         (["--frobnicate", "session", "list"], "unknown option --frobnicate")]:
        r = ctl(e, *args)
        if r.returncode != 2 or needle not in r.stderr:
            failures.append(f"livemicroctl {' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r} "
                            f"(expected 2 and {needle!r})")
    return failures


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    doc = sys.argv[1]
    if not shutil.which("jq"):
        print("jq is not installed (Debian package jq): the walkthrough needs it")
        return SKIP
    livemicrod, livemicroctl = os.environ["LIVEMICROD"], os.environ["LIVEMICROCTL"]
    with tempfile.TemporaryDirectory(prefix="livemicro-walkthrough-") as workdir:
        daemon = Daemon(livemicrod, workdir)
        try:
            env = dict(os.environ,
                       PATH=os.pathsep.join([os.path.dirname(livemicroctl), os.path.dirname(livemicrod),
                                             os.environ.get("PATH", "")]),
                       LIVEMICRO_SERVER=daemon.url, LIVEMICRO_ADMIN_TOKEN=ADMIN_TOKEN,
                       LIVEMICROCTL=livemicroctl)
            env.pop("LIVEMICRO_TOKEN", None)
            failures = run_page(doc, env, workdir)
            if not failures:
                failures = check_wait_reports_failures(env)
        finally:
            daemon.stop()
        if failures:
            print("\n\n".join(failures))
            print("--- livemicrod's log (end):\n" + daemon.text()[-4000:])
            return 1
    print("docs/cli.md ran as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
