#!/usr/bin/env python3
"""Lists C/C++ functions longer than N lines (default 80), longest first.

Usage: scripts/long-functions.py [DIR] [N]

Looks for the tree's layout (clang-format's GNU style): a definition's
opening brace at column 0, or at column 2 for a member defined inside its
class, and its closing brace at the same column.  Prints the line count,
the place, the signature, and whether a comment right above it says why it
is long ("Long by nature", "cannot be split", ...).  Skips build trees.
"""
import os
import re
import sys

REASON = re.compile(r'long|cannot be split|one case per|why it', re.I)


def functions(path):
    lines = open(path, errors='replace').read().split('\n')
    for indent in ('', '  '):
        i = 0
        while i < len(lines):
            if lines[i] == indent + '{' and i > 0:
                j = i - 1
                while j > 0 and not re.match(r'^' + indent + r'[A-Za-z_~].*\(', lines[j]):
                    j -= 1
                k = i + 1
                while k < len(lines) and not re.match(r'^' + indent + r'}\s*(//.*)?$', lines[k]):
                    k += 1
                sig = lines[j].strip()
                # A line ending in ';' is a statement before a nested block
                # ({ ... } // scope), not a signature.
                if not sig.startswith(('struct', 'class', 'namespace', 'enum', 'static const', 'const ')) \
                        and not sig.endswith(';'):
                    above = '\n'.join(lines[max(0, j - 4):j])
                    yield k - j + 1, j + 1, sig, bool(REASON.search(above))
                i = k
            i += 1


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in ('build', 'subprojects', '.git') and not x.startswith('build')]
        for f in files:
            if f.endswith(('.c', '.cpp', '.h')):
                p = os.path.join(d, f)
                for n, line, sig, reason in functions(p):
                    if n > limit:
                        found.append((n, os.path.relpath(p, root), line, sig, reason))
    for n, p, line, sig, reason in sorted(found, reverse=True):
        print(f'{n:5d}  {p}:{line}  {sig[:70]}{"  [reason above]" if reason else ""}')


if __name__ == '__main__':
    main()
