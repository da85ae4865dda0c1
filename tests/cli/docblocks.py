"""Fenced blocks of a Markdown page, and output checked against a ```text block.

Used by the tests that execute the documentation (walkthrough.py,
library_install.py): the page is the script, so it cannot drift.
"""
import re
import sys


def blocks(doc):
    """[(info, text)] of the page's fenced blocks, in order."""
    out, info, lines = [], None, []
    for line in open(doc, encoding="utf-8"):
        stripped = line.rstrip("\n")
        if info is None:
            m = re.match(r"^```(.*)$", stripped)
            if m:
                info, lines = m.group(1).strip(), []
        elif stripped.startswith("```"):
            out.append((info, "\n".join(lines)))
            info = None
        else:
            lines.append(stripped)
    if info is not None:
        sys.exit(f"{doc}: a code block is not closed")
    return out


def pattern(line):
    parts = [re.escape(p) for p in re.split(r"\s+", line.strip())]
    return re.compile(r"\s+".join(parts).replace(re.escape("…"), ".*"))


def matches(expected, output):
    """The first expected line that matches no output line (in order), or None."""
    got = [re.sub(r"\s+", " ", l.strip()) for l in output.splitlines()]
    i = 0
    for want in [l for l in expected.splitlines() if l.strip()]:
        p = pattern(want)
        while i < len(got) and not p.fullmatch(got[i]):
            i += 1
        if i == len(got):
            return want
        i += 1
    return None
