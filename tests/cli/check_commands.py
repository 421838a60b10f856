#!/usr/bin/env python3
"""Every paliflow command takes --help and --config FILE, as the README says (issue 16).

usage: check_commands.py --paliflow BIN --source DIR

The commands are the ones `paliflow --help` lists (a new command is checked without editing this file).
For each command:
  --help                       exit 0, a usage line naming the command on stdout, --config FILE and --help
                               among the options it lists
  --config F, F holds "help"   exit 0 and the same usage: the file's lines are the command's options
  --config F, F holds an option the command does not have
                               exit 2, the option named on stderr (the file is parsed, not ignored)
  --config /missing/file       exit 2, the path named on stderr
  --config F, a malformed line exit 2, the file and the line number named on stderr
  --config with no FILE        exit 2
and for one command with a value option (tokenize --tokenizer): the command line wins over the file.
The README's sentence that every command takes both is checked to still be there (if it changes, this test
must change with it). Exit 0 pass, 1 fail."""
import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Findings  # noqa: E402

FINDINGS = Findings()   # every command's problems in one run
check = FINDINGS.check


def run(argv, stdin=""):
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


def commands(paliflow):
    r = run([paliflow, "--help"])
    check(r.returncode == 0, "paliflow --help exited %d" % r.returncode)
    body = r.stdout.split("commands:", 1)[1] if "commands:" in r.stdout else ""
    names = re.findall(r"^  ([a-z][a-z0-9-]+)\s", body, re.M)
    check(len(names) >= 10, "paliflow --help lists %d commands: %r" % (len(names), names))
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paliflow", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    pf = a.paliflow
    readme = open(os.path.join(a.source, "README.md")).read()
    check(re.search(r"Every command takes `--help` and `--config FILE`", readme),
          "README.md no longer says every command takes --help and --config FILE: update this test with it")
    with tempfile.TemporaryDirectory(prefix="pf_cli_") as d:
        def conf(name, text):
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(text)
            return p
        help_conf = conf("help.conf", "# options from a file\nhelp\n")
        bogus_conf = conf("bogus.conf", "no-such-option-zz = 1\n")
        bad_conf = conf("bad.conf", "# fine\n= no name\n")
        loglevel_conf = conf("loglevel.conf", "log-level = loud\n")
        missing = os.path.join(d, "missing", "x.conf")
        names = commands(pf)
        for c in names:
            r = run([pf, c, "--help"])
            usage = r.stdout.splitlines()[0] if r.stdout else ""
            if check(r.returncode == 0 and usage.startswith("usage: paliflow " + c),
                     "%s --help: exit %d, first line %r" % (c, r.returncode, usage)):
                check(re.search(r"^\s+--config FILE\s", r.stdout, re.M), "%s --help does not list --config FILE" % c)
                check(re.search(r"^\s+(-h, )?--help\s", r.stdout, re.M), "%s --help does not list --help" % c)
                # one option table per command (base/optable.h): 80 columns, --log-level everywhere
                wide = [l for l in r.stdout.splitlines() if len(l) > 79]
                check(not wide, "%s --help has %d lines over 79 columns: %r" % (c, len(wide), wide[:2]))
                check(re.search(r"^\s+--log-level LEVEL\s", r.stdout, re.M), "%s --help does not list --log-level" % c)
                # the usage lines: continued under the command (7 blanks), never between an option and its
                # argument ("... --model" / "       DIR ...")
                block = r.stdout.split("\n\n", 1)[0].splitlines()
                check(all(re.match(r" {7}\S", l) for l in block[1:]), "%s --help: usage continued oddly: %r" % (c, block))
                split = [(l, n) for l, n in zip(block, block[1:])
                         if re.search(r"(^|\s)(\[?--?[a-z0-9-]+|<)$", l) and re.match(r"\s+[A-Z.]", n)]
                check(not split, "%s --help: an option's argument on the next usage line: %r" % (c, split))
            r2 = run([pf, c, "--config", help_conf])
            check(r2.returncode == 0 and r2.stdout == r.stdout,
                  "%s --config (a file saying 'help'): exit %d, not the --help text: %s" % (c, r2.returncode,
                                                                                        r2.stderr.strip()[:200]))
            r = run([pf, c, "--config", bogus_conf])
            check(r.returncode == 2 and "no-such-option-zz" in r.stderr,
                  "%s --config (an unknown option): exit %d, stderr %r" % (c, r.returncode, r.stderr[:200]))
            r = run([pf, c, "--config", missing])
            check(r.returncode == 2 and missing in r.stderr,
                  "%s --config MISSING: exit %d, stderr %r" % (c, r.returncode, r.stderr[:200]))
            r = run([pf, c, "--config=" + bad_conf])
            check(r.returncode == 2 and bad_conf in r.stderr and "line 2" in r.stderr,
                  "%s --config=MALFORMED: exit %d, stderr %r" % (c, r.returncode, r.stderr[:200]))
            r = run([pf, c, "--config", loglevel_conf])
            check(r.returncode == 2 and "--log-level: want error|warn|info|debug, got 'loud'" in r.stderr,
                  "%s --config (log-level = loud): exit %d, stderr %r" % (c, r.returncode, r.stderr[:200]))
            r = run([pf, c, "--config"])
            check(r.returncode == 2 and "--config" in r.stderr,
                  "%s --config (no FILE): exit %d, stderr %r" % (c, r.returncode, r.stderr[:200]))
        # the command line wins over the file; the file fills in what the command line leaves out
        tok_conf = conf("tok.conf", "tokenizer = %s/from-file.json\n" % d)
        r = run([pf, "tokenize", "--config", tok_conf, "--tokenizer", d + "/from-cmdline.json"])
        check(r.returncode == 2 and "from-cmdline.json" in r.stderr and "from-file.json" not in r.stderr,
              "tokenize: the command line's --tokenizer should win over the file's: %r" % r.stderr[:200])
        r = run([pf, "tokenize", "--config", tok_conf])
        check(r.returncode == 2 and "from-file.json" in r.stderr,
              "tokenize: the file's tokenizer was not used: %r" % r.stderr[:200])
    return FINDINGS.report("cli commands", "%d commands take --help and --config FILE (%s)" % (len(names),
                                                                                                 " ".join(names)))


if __name__ == "__main__":
    sys.exit(main())
