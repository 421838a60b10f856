#!/usr/bin/env python3
"""check_install.py --build DIR --cmake CMAKE: `cmake --install DIR --prefix TMP` gives a working tree.

The installed bin/paliflow runs `--help` (and a subcommand's --help) from outside the build tree, and the
documents, examples and deploy templates cmake/install.cmake names are where it says. Exit 0 pass, 1 fail.
"""
import argparse
import os
import subprocess
import sys
import tempfile

WANT = [
    "bin/paliflow",
    "share/doc/paliflow/README.md",
    "share/doc/paliflow/PROTOCOL.md",
    "share/doc/paliflow/MODEL.md",
    "share/doc/paliflow/examples/demo.sh",
    "share/doc/paliflow/examples/consume_records.py",
    "share/doc/paliflow/examples/producer.conf",
    "share/doc/paliflow/examples/images",
    "share/doc/paliflow/deploy/systemd/paliflow-producer.service",
    "share/doc/paliflow/deploy/k8s",
    "share/doc/paliflow/deploy/sizing.tsv",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--cmake", default="cmake")
    a = ap.parse_args()
    fails = []
    with tempfile.TemporaryDirectory(prefix="pf-install-") as tmp:
        prefix = os.path.join(tmp, "prefix")
        r = subprocess.run([a.cmake, "--install", a.build, "--prefix", prefix], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL: cmake --install exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            return 1
        for rel in WANT:
            if not os.path.exists(os.path.join(prefix, rel)):
                fails.append(f"{rel}: not installed")
        exe = os.path.join(prefix, "bin", "paliflow")
        if not os.access(exe, os.X_OK):
            fails.append("bin/paliflow: not executable")
        else:
            for args, want in ((["--help"], "generate"), (["producer", "--help"], "--bind")):
                r = subprocess.run([exe] + args, capture_output=True, text=True, cwd=tmp, timeout=60)
                out = r.stdout + r.stderr
                if r.returncode != 0:
                    fails.append(f"paliflow {' '.join(args)}: exit {r.returncode}: {out[-500:]}")
                elif want not in out:
                    fails.append(f"paliflow {' '.join(args)}: no '{want}' in its help: {out[:500]}")
        if not os.access(os.path.join(prefix, "share/doc/paliflow/examples/demo.sh"), os.X_OK):
            fails.append("examples/demo.sh: installed without its execute bit")
    for f in fails:
        print("FAIL: " + f)
    if not fails:
        print(f"installed {len(WANT)} paths; bin/paliflow --help runs")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
