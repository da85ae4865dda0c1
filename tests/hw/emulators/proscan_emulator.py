#!/usr/bin/python3
"""Prior ProScan III emulator (standard mode) on a pseudo-terminal, for the
proscan:// driver's tests.

Follows the ProScan III manual, section 4 (ASCII commands, CR-terminated):
  COMP 0 / COMP     set / report the mode (reply 0)
  RES,s  RES,z      µm per position unit of the stage / focus (E,7 without
                    a focus drive)
  P  PS  PZ         position x,y,z / x,y / z, in those units
  $                 motion status bits: 1 X, 2 Y, 4 Z moving
  G,x,y  V,z        absolute moves; R when the move ends, E,n at once when
                    refused (E,7 NO FOCUS for V without a focus drive)
  SMS[,n] SMZ[,n]   maximum speed in percent (E,8 outside 1..100)
  I  K              stop (decelerate) / kill motion; the interrupted move
                    ends with its R, then the stop answers R
  anything else     E,5 COMMAND NOT FOUND
Replies come in command order (moves answer when they end).

Extra control commands (see ptyserver.py for the common ones):
  error N           answer the next command with E,N
"""

import argparse
import sys
import time

from ptyserver import PtyServer


class ProScan(PtyServer):
    def __init__(self, args):
        super().__init__(args.link, [b"\r"])
        self.res_s = args.res_stage
        self.res_z = args.res_focus
        self.focus = not args.no_focus
        self.max_s = args.max_speed  # µm/s at SMS,100
        self.max_z = args.max_focus_speed
        self.sms = 50
        self.smz = 50
        self.pos = [0.0, 0.0, 0.0]  # in units
        self.moves = {}  # group -> (start, target, t0, dur)
        self.error_next = None

    def current(self, group, now):
        axes = (0, 1) if group == "xy" else (2,)
        m = self.moves.get(group)
        if not m:
            return [self.pos[a] for a in axes]
        start, target, t0, dur = m
        f = 1.0 if dur <= 0 else min(1.0, (now - t0) / dur)
        return [start[i] + (target[i] - start[i]) * f for i in range(len(axes))]

    def snapshot(self, now):
        xy = self.current("xy", now)
        z = self.current("z", now)
        return [xy[0], xy[1], z[0]]

    def tick(self, now):
        for group in list(self.moves):
            start, target, t0, dur = self.moves[group]
            if now >= t0 + dur:
                axes = (0, 1) if group == "xy" else (2,)
                for i, a in enumerate(axes):
                    self.pos[a] = target[i]
                del self.moves[group]
                self.reply("R\r")

    def control(self, words):
        if words[0] == "error":
            self.error_next = int(words[1])
            self.event("OK error")
            return True
        return False

    def start_move(self, group, target, now):
        axes = (0, 1) if group == "xy" else (2,)
        start = self.current(group, now)
        for i, a in enumerate(axes):
            self.pos[a] = start[i]
        res = self.res_s if group == "xy" else self.res_z
        speed_um = (self.max_s * self.sms if group == "xy" else self.max_z * self.smz) / 100.0
        dist_um = sum(((target[i] - start[i]) * res) ** 2 for i in range(len(axes))) ** 0.5
        self.moves[group] = (start, target, now, dist_um / speed_um)

    def on_line(self, line):
        now = time.monotonic()
        if self.error_next is not None:
            self.reply("E,%d\r" % self.error_next)
            self.error_next = None
            return
        for sep in ", \t;:":
            line = line.replace(sep, " ")
        w = line.split()
        cmd, args = w[0].upper(), w[1:]
        try:
            nums = [float(a) for a in args if a.lower() not in ("s", "z")]
        except ValueError:
            self.reply("E,4\r")
            return
        p = self.snapshot(now)
        if cmd == "COMP":
            self.reply("0\r")
        elif cmd == "RES" and args and args[0].lower() == "s":
            self.reply("%g\r" % self.res_s)
        elif cmd == "RES" and args and args[0].lower() == "z":
            self.reply(("%g\r" % self.res_z) if self.focus else "E,7\r")
        elif cmd == "P":
            self.reply("%d,%d,%d\r" % (round(p[0]), round(p[1]), round(p[2])))
        elif cmd == "PS":
            self.reply("%d,%d\r" % (round(p[0]), round(p[1])))
        elif cmd == "PZ":
            self.reply(("%d\r" % round(p[2])) if self.focus else "E,7\r")
        elif cmd == "$":
            bits = (3 if "xy" in self.moves else 0) | (4 if "z" in self.moves else 0)
            self.reply("%d\r" % bits)
        elif cmd == "G":
            if len(nums) != 2:
                self.reply("E,4\r")
            else:
                self.start_move("xy", nums, now)
        elif cmd == "V":
            if not self.focus:
                self.reply("E,7\r")
            elif len(nums) != 1:
                self.reply("E,4\r")
            else:
                self.start_move("z", nums, now)
        elif cmd in ("SMS", "SMZ"):
            if cmd == "SMZ" and not self.focus:
                self.reply("E,7\r")
            elif not nums:
                self.reply("%d\r" % (self.sms if cmd == "SMS" else self.smz))
            elif not (1 <= nums[0] <= 100):
                self.reply("E,8\r")
            else:
                if cmd == "SMS":
                    self.sms = int(nums[0])
                else:
                    self.smz = int(nums[0])
                self.reply("0\r")
        elif cmd in ("I", "K"):
            for group in list(self.moves):
                axes = (0, 1) if group == "xy" else (2,)
                cur = self.current(group, now)
                for i, a in enumerate(axes):
                    self.pos[a] = cur[i]
                del self.moves[group]
                self.reply("R\r")
            self.reply("R\r")
        else:
            self.reply("E,5\r")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--link", required=True)
    p.add_argument("--res-stage", type=float, default=1.0)
    p.add_argument("--res-focus", type=float, default=0.1)
    p.add_argument("--no-focus", action="store_true")
    p.add_argument("--max-speed", type=float, default=10000.0)
    p.add_argument("--max-focus-speed", type=float, default=1000.0)
    ProScan(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
