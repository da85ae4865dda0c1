"""A controller emulator's serial side: a pseudo-terminal whose slave path is
published through a symlink, so the driver under test opens the same path
again after the emulator "unplugs" (closes the pty) and comes back on a new
one.  Tests control an emulator through its stdin, one command per line:

  disconnect        close the pty (the device is gone)
  connect           open a new pty and point the symlink at it
  delay MS          answer every command MS milliseconds late
  quit

and read what it did on its stdout, one event per line:

  PTY /dev/pts/N    ready on this pty (also after connect)
  RX <command>      a command it received (real-time bytes as \\xNN)
  DOWN              the pty is closed

Standard library only (run with /usr/bin/python3).
"""

import os
import select
import sys
import time
import tty


class PtyServer:
    def __init__(self, link, terminator):
        self.link = link
        self.terminator = terminator  # bytes that end a command line
        self.master = None
        self.rx = b""
        self.delay = 0.0
        self.outbox = []  # (due time, bytes) — replies keep their order
        self.running = True

    # -- events to the test
    def event(self, text):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    # -- the line
    def connect(self):
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, before anyone writes
        name = os.ttyname(slave)
        os.close(slave)
        self.master = master
        os.set_blocking(master, False)
        tmp = self.link + ".new"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(name, tmp)
        os.replace(tmp, self.link)
        self.rx = b""
        self.outbox = []
        self.on_connect()
        self.event("PTY " + name)

    def disconnect(self):
        if self.master is not None:
            os.close(self.master)
            self.master = None
            self.event("DOWN")

    def reply(self, text):
        """Queues a reply (str or bytes), sent after the configured delay."""
        data = text.encode() if isinstance(text, str) else text
        due = time.monotonic() + self.delay
        if self.outbox:
            due = max(due, self.outbox[-1][0])
        self.outbox.append((due, data))

    # -- hooks for a protocol
    def on_connect(self):
        pass

    def on_bytes(self, data):
        """Default: split into lines at the terminator."""
        self.rx += data
        while True:
            cut = [self.rx.find(t) for t in self.terminator if self.rx.find(t) >= 0]
            if not cut:
                break
            i = min(cut)
            line = self.rx[:i].decode(errors="replace").strip()
            self.rx = self.rx[i + 1:]
            if line:
                self.event("RX " + line)
                self.on_line(line)

    def on_line(self, line):
        pass

    def tick(self, now):
        pass

    def control(self, words):
        return False

    # -- main loop
    def run(self):
        self.connect()
        stdin = sys.stdin.fileno()
        pending = b""  # control lines: read raw, several may come at once
        while self.running:
            now = time.monotonic()
            fds = [stdin] + ([self.master] if self.master is not None else [])
            timeout = 0.005
            ready, _, _ = select.select(fds, [], [], timeout)
            if stdin in ready:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    words = line.decode().split()
                    if not words:
                        continue
                    if words[0] == "quit":
                        self.running = False
                    elif words[0] == "disconnect":
                        self.disconnect()
                    elif words[0] == "connect":
                        self.disconnect()
                        self.connect()
                    elif words[0] == "delay":
                        self.delay = float(words[1]) / 1000.0
                        self.event("OK delay")
                    elif not self.control(words):
                        self.event("ERR unknown control " + words[0])
                if not self.running:
                    break
            if self.master is not None and self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data:
                    self.on_bytes(data)
            self.tick(time.monotonic())
            while self.master is not None and self.outbox and self.outbox[0][0] <= time.monotonic():
                _, data = self.outbox.pop(0)
                try:
                    os.write(self.master, data)
                except OSError:
                    pass
        self.disconnect()
        try:
            os.unlink(self.link)
        except FileNotFoundError:
            pass
