#!/usr/bin/python3
"""GRBL 1.1 emulator on a pseudo-terminal, for the grbl:// driver's tests.

Follows the protocol of https://github.com/gnea/grbl/wiki (v1.1):
- real-time bytes, acted on at once and never answered with ok:
  '?' status report <Idle|MPos:x,y,z|FS:f,0>, '!' feed hold (Hold:1 while
  decelerating, then Hold:0), '~' cycle start, 0x18 soft reset (banner; an
  alarm 3 if reset while moving);
- lines: G0/G1 with G53/G90/G91/G21/G20, X/Y/Z targets and F feed (mm/min),
  answered 'ok' when queued (the move then runs at its feed), $H homing (ok
  when done, position 0,0,0), $X unlock, $$ settings; 'error:N' for what
  GRBL refuses (error:9 while in alarm, error:20 unknown command, error:2 bad
  number, error:22 no feed rate for G1);
- soft limits: a target outside [0, travel] raises ALARM:2 (position kept);
- --homing-lock: starts in Alarm with "[MSG:'$H'|'$X' to unlock]".

Extra control commands (see ptyserver.py for the common ones):
  alarm N           raise ALARM:N now (e.g. 1 = hard limit: motion stops)
  fail-next N       answer the next line with error:N
  travel X Y Z      machine travel in mm
"""

import argparse
import sys
import time

from ptyserver import PtyServer

BANNER = "\r\nGrbl 1.1h ['$' for help]\r\n"


class Grbl(PtyServer):
    def __init__(self, args):
        super().__init__(args.link, [b"\n", b"\r"])
        self.travel = [args.travel_x, args.travel_y, args.travel_z]
        self.homing_lock = args.homing_lock
        self.pos = [args.start_x, args.start_y, args.start_z]
        self.state = "Idle"
        self.move = None  # (start pos, target, t0, duration)
        self.hold_until = None
        self.incremental = False
        self.feed = None
        self.fail_next = None
        self.default_feed = 600.0

    def on_connect(self):
        # Like an Arduino GRBL: the port opening resets it; it keeps position
        # unless the test restarted it in alarm.
        self.move = None
        self.hold_until = None
        if self.homing_lock:
            self.state = "Alarm"
        elif self.state not in ("Alarm",):
            self.state = "Idle"
        self.reply(BANNER)
        if self.state == "Alarm":
            self.reply("[MSG:'$H'|'$X' to unlock]\r\n")

    def current(self, now):
        if not self.move:
            return list(self.pos)
        start, target, t0, dur = self.move
        f = 1.0 if dur <= 0 else min(1.0, max(0.0, (now - t0) / dur))
        return [start[k] + (target[k] - start[k]) * f for k in range(3)]

    def status(self, now):
        p = self.current(now)
        feed = 0 if self.state != "Run" else int(self.feed or 0)
        return "<%s|MPos:%.3f,%.3f,%.3f|FS:%d,0>\r\n" % (self.state, p[0], p[1], p[2], feed)

    def on_bytes(self, data):
        now = time.monotonic()
        rest = b""
        for b in data:
            c = bytes([b])
            if c == b"?":
                self.reply(self.status(now))
            elif c == b"!":
                self.event("RX !")
                if self.state == "Run":
                    # decelerate (50 ms), then hold where it is
                    self.pos = self.current(now)
                    self.move = None
                    self.state = "Hold:1"
                    self.hold_until = now + 0.05
            elif c == b"~":
                self.event("RX ~")
                if self.state.startswith("Hold"):
                    self.state = "Idle"
            elif c == b"\x18":
                self.event("RX \\x18")
                self.soft_reset(now)
            else:
                rest += c
        if rest:
            super().on_bytes(rest)

    def soft_reset(self, now):
        if self.state == "Run":
            self.pos = self.current(now)
            self.move = None
            self.state = "Alarm"
            self.reply("ALARM:3\r\n")
        else:
            self.move = None
            if self.state != "Alarm":
                self.state = "Idle"
        self.hold_until = None
        self.reply(BANNER)

    def tick(self, now):
        if self.state == "Hold:1" and self.hold_until and now >= self.hold_until:
            self.state = "Hold:0"
        if self.state == "Run" and self.move:
            start, target, t0, dur = self.move
            if now >= t0 + dur:
                self.pos = list(target)
                self.move = None
                self.state = "Idle"
        if self.state == "Home" and now >= self.home_done:
            self.pos = [0.0, 0.0, 0.0]
            self.state = "Idle"
            self.reply("ok\r\n")

    def control(self, words):
        if words[0] == "alarm":
            now = time.monotonic()
            self.pos = self.current(now)
            self.move = None
            self.state = "Alarm"
            self.reply("ALARM:%s\r\n" % words[1])
            self.event("OK alarm")
            return True
        if words[0] == "fail-next":
            self.fail_next = int(words[1])
            self.event("OK fail-next")
            return True
        if words[0] == "travel":
            self.travel = [float(w) for w in words[1:4]]
            self.event("OK travel")
            return True
        return False

    def on_line(self, line):
        now = time.monotonic()
        if self.fail_next is not None:
            self.reply("error:%d\r\n" % self.fail_next)
            self.fail_next = None
            return
        if line.startswith("$"):
            if line == "$H":
                self.state = "Home"
                self.home_done = now + 0.3
                return  # ok when the cycle is done
            if line == "$X":
                if self.state == "Alarm":
                    self.state = "Idle"
                    self.reply("[MSG:Caution: Unlocked]\r\n")
                self.reply("ok\r\n")
                return
            if line == "$$":
                for i, t in enumerate(self.travel):
                    self.reply("$%d=%.3f\r\n" % (130 + i, t))
                self.reply("ok\r\n")
                return
            self.reply("error:3\r\n")
            return
        if self.state == "Alarm":
            self.reply("error:9\r\n")
            return
        # G-code: words letter+number
        words = {}
        gs = []
        i = 0
        up = line.upper().replace(" ", "")
        while i < len(up):
            letter = up[i]
            if not letter.isalpha():
                self.reply("error:1\r\n")
                return
            j = i + 1
            while j < len(up) and (up[j].isdigit() or up[j] in ".-+"):
                j += 1
            try:
                value = float(up[i + 1:j])
            except ValueError:
                self.reply("error:2\r\n")
                return
            if letter == "G":
                gs.append(value)
            else:
                words[letter] = value
            i = j
        motion = None
        machine = False
        for g in gs:
            if g in (0, 1):
                motion = int(g)
            elif g == 53:
                machine = True
            elif g == 90:
                self.incremental = False
            elif g == 91:
                self.incremental = True
            elif g in (20, 21, 17, 94):
                pass
            else:
                self.reply("error:20\r\n")
                return
        for letter in words:
            if letter not in "XYZF":
                self.reply("error:20\r\n")
                return
        if "F" in words:
            self.feed = words["F"]
        if motion is None:
            self.reply("ok\r\n")
            return
        if motion == 1 and not self.feed:
            self.reply("error:22\r\n")
            return
        if self.state != "Idle":
            # The real GRBL plans it behind the running move; the driver
            # under test sends one move at a time, so this is its bug.
            self.reply("error:8\r\n")
            return
        start = self.current(now)
        target = list(start)
        for k, axis in enumerate("XYZ"):
            if axis in words:
                target[k] = (start[k] + words[axis]) if (self.incremental and not machine) else words[axis]
        for k in range(3):
            if not (0.0 <= target[k] <= self.travel[k]):
                self.state = "Alarm"
                self.reply("ok\r\n")
                self.reply("ALARM:2\r\n")
                return
        dist = sum((target[k] - start[k]) ** 2 for k in range(3)) ** 0.5
        rate = (self.feed if motion == 1 else self.default_feed) / 60.0  # mm/s
        self.pos = start
        self.move = (start, target, now, dist / rate if rate > 0 else 0)
        self.state = "Run" if dist > 0 else "Idle"
        if dist == 0:
            self.move = None
        self.reply("ok\r\n")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--link", required=True, help="symlink to the pty slave")
    p.add_argument("--travel-x", type=float, default=100.0)
    p.add_argument("--travel-y", type=float, default=100.0)
    p.add_argument("--travel-z", type=float, default=10.0)
    p.add_argument("--start-x", type=float, default=10.0)
    p.add_argument("--start-y", type=float, default=10.0)
    p.add_argument("--start-z", type=float, default=1.0)
    p.add_argument("--homing-lock", action="store_true")
    Grbl(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
