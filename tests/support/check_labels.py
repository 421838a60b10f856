#!/usr/bin/env python3
"""check_labels.py --build DIR --ctest CTEST: every registered test carries a category label.

The labels come from tests/support/labels.cmake; a test that matches none of its rules (a new folder, a renamed
test) would silently drop out of `ctest -L unit` / `-L e2e` runs. This asks ctest itself (--show-only=json-v1,
which runs nothing) what it will run, so it sees exactly the labels `ctest -L` filters on.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="the build tree ctest runs in")
    ap.add_argument("--ctest", default="ctest", help="the ctest program")
    ap.add_argument("--categories", required=True,
                    help="comma-separated labels of which a test needs one (PF_TEST_CATEGORIES in labels.cmake)")
    a = ap.parse_args()
    categories = set(c for c in a.categories.split(",") if c)
    # ctest writes Testing/Temporary/LastTest.log even for --show-only: run it on a copy of the build tree's
    # CTestTestfile.cmake files, so that the ctest run this test is part of keeps its own log.
    with tempfile.TemporaryDirectory(prefix="pf_labels_") as tmp:
        for root, _dirs, files in os.walk(a.build):
            if "CTestTestfile.cmake" in files:
                dst = os.path.join(tmp, os.path.relpath(root, a.build))
                os.makedirs(dst, exist_ok=True)
                shutil.copy(os.path.join(root, "CTestTestfile.cmake"), dst)
        out = subprocess.run([a.ctest, "--test-dir", tmp, "--show-only=json-v1"], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"FAIL: {a.ctest} --show-only=json-v1 exited {out.returncode}: {out.stderr.strip()}")
        return 1
    tests = json.loads(out.stdout).get("tests", [])
    if not tests:
        print(f"FAIL: ctest lists no tests in {a.build}")
        return 1
    missing = []
    counts = {}
    for t in tests:
        labels = set()
        for p in t.get("properties", []):
            if p.get("name") == "LABELS":
                labels.update(p.get("value", []))
        cats = labels & categories
        if not cats:
            missing.append(f"{t['name']} (labels: {', '.join(sorted(labels)) or 'none'})")
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
    print(f"{len(tests)} tests; per label: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if missing:
        print("FAIL: tests without a category label (" + ", ".join(sorted(categories)) +
              "); add a rule or an entry in tests/support/labels.cmake:")
        for m in missing:
            print("  " + m)
        return 1
    if not counts.get("unit"):
        print("FAIL: no test is labelled unit: tests/support/labels.cmake was not applied")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
