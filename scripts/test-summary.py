#!/usr/bin/env python3
"""Prints 'N passed, N failed[, N skipped]' counted from meson's test logs.

Individual GoogleTest cases are counted from testlog.junit.xml; a meson test
that failed without reporting a failed case (crash, timeout, no XML) counts
as one failure, so a broken run never looks green.  Exits 1 when anything
failed or when no test ran at all.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

logs = Path(sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs")
passed = failed = skipped = 0
failing_tests = set()  # meson test names with at least one failed case

junit = logs / "testlog.junit.xml"
if junit.exists():
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        # GoogleTest: "<project>.<meson test name>.<gtest suite>"; any other
        # test: a case named "<meson test name>" in the suite "<project>".
        name = suite.get("name", "")
        gtest = "." in name
        meson_name = name.split(".", 1)[-1].rsplit(".", 1)[0]
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failing_tests.add(meson_name if gtest else case.get("name", ""))
            elif case.find("skipped") is not None or case.get("result") == "skipped":
                skipped += 1
            else:
                passed += 1

jlog = logs / "testlog.json"
if jlog.exists():
    for line in jlog.read_text().splitlines():
        if not line.strip():
            continue
        t = json.loads(line)
        if t.get("result") in {"FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"} \
                and t.get("name") not in failing_tests:
            failed += 1
            print(f"meson test '{t['name']}': {t['result']} (counted as one failure)",
                  file=sys.stderr)

summary = f"{passed} passed, {failed} failed"
if skipped:
    summary += f", {skipped} skipped"
print(summary)
sys.exit(1 if failed or passed + failed == 0 else 0)
