#!/usr/bin/env python3
"""Runs the Eclipse Paho interoperability client tests against one MQTT address and tabulates
the results; driven by scripts/paho-interop.sh, which starts the brokers.

  paho-interop.py run SUITE_DIR {3|5} HOST PORT OUT.jsonl [--port-b PORT] [--timeout S] [TEST...]
  paho-interop.py table LABEL=OUT.jsonl ...

`run` executes the suite's own file (interoperability/client_test.py for MQTT 3.1.1,
client_test5.py for MQTT 5) as its `__main__`, with `-h HOST -p PORT`, so the suite parses its
options and sets its host, port and topics itself (`--hostname=HOST`: its `-h` prints the usage). Only `unittest.main` is replaced: the suite
hands it the whole command line, which it cannot parse (client_test.py leaves `-p PORT` in
sys.argv, client_test5.py leaves `-h HOST`, and unittest rejects both), and it exits the
process. Our replacement runs the suite's `Test` class with a result that writes one JSON line
per test: test, result (pass, fail, error, timeout, skip), seconds, detail. A test gets
--timeout seconds (some of the suite's tests wait in unbounded loops for a message).

--port-b spreads the suite's two clients over two brokers: the connection of client id
"myclientid2" (the suite's `bclient`) goes to HOST:PORT_B, every other client id ("myclientid",
"clean retained", the empty id) to HOST:PORT. The suite takes one address; this is the only
place where we reach into it, by wrapping its client's connect().

Nothing of the suite is copied here; it is read from SUITE_DIR at run time.
"""

import io
import json
import os
import runpy
import signal
import sys
import time
import traceback
import unittest

B_CLIENT_IDS = {b"myclientid2", "myclientid2"}


class HarnessTimeout(Exception):
    """Raised in the test's thread when a test outlives --timeout."""


class Tee(io.TextIOBase):
    """Writes to the real stream and keeps a copy of what the current test printed."""

    def __init__(self, real):
        self.real = real
        self.buf = io.StringIO()

    def write(self, s):
        self.real.write(s)
        self.buf.write(s)
        return len(s)

    def flush(self):
        self.real.flush()


def last_error_line(text):
    """The most telling line of a printed traceback: its last 'SomethingError: ...' line."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0] or "timeout" in line):
            return line
    return ""


class JSONResult(unittest.TestResult):
    """Records one JSON line per test in out, with the test's printed output kept for detail."""

    def __init__(self, out, timeout):
        super().__init__()
        self.out = out
        self.timeout = timeout
        self.outcome = None

    def startTest(self, test):
        super().startTest(test)
        self.start = time.time()
        self.outcome = ("pass", "")
        self.tee_out, self.tee_err = Tee(sys.__stdout__), Tee(sys.__stderr__)
        sys.stdout, sys.stderr = self.tee_out, self.tee_err
        print("=== %s" % test.id(), flush=True)
        signal.alarm(self.timeout)

    def detail(self, err):
        """'client_test5.py:LINE <source line> -> Error: message' for the failing assertion."""
        etype, value, tb = err
        printed = self.tee_out.buf.getvalue() + self.tee_err.buf.getvalue()
        msg = str(value).strip().splitlines()
        msg = "%s: %s" % (etype.__name__, msg[0]) if msg else etype.__name__
        where = [f for f in traceback.extract_tb(tb) if f.filename.endswith(("client_test.py", "client_test5.py"))]
        # The suite often catches the real failure, prints its traceback and then asserts
        # `succeeded == True`: the printed traceback says more than "False != True".
        if msg.endswith((": False != True", ": True != False")):
            printed_line = last_error_line(printed)
            if printed_line:
                msg = printed_line
                lines = printed.splitlines()
                frames = [i for i, l in enumerate(lines)
                          if l.strip().startswith("File ") and "client_test" in l and i + 1 < len(lines)]
                if frames:
                    i = frames[-1]
                    lineno = lines[i].split(", line ")[1].split(",")[0]
                    return "line %s: %s -> %s" % (lineno, lines[i + 1].strip(), msg)
        if where:
            f = where[-1]
            return "line %d: %s -> %s" % (f.lineno, f.line, msg)
        return msg

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcome = ("fail", self.detail(err))

    def addError(self, test, err):
        super().addError(test, err)
        kind = "timeout" if err[0] is HarnessTimeout else "error"
        self.outcome = (kind, self.detail(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcome = ("skip", reason)

    def stopTest(self, test):
        signal.alarm(0)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        result, detail = self.outcome
        print("=== %s: %s %s" % (test.id(), result, detail), flush=True)
        rec = {"test": test.id().split(".")[-1], "result": result,
               "seconds": round(time.time() - self.start, 1), "detail": detail}
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()
        super().stopTest(test)


def spread(version, port_b):
    """Wraps the suite client's connect() so that bclient's connections go to port_b."""
    import importlib
    mod = importlib.import_module("mqtt.clients.V5.main" if version == "5" else "mqtt.clients.V311.main")
    orig = mod.Client.connect

    def connect(self, *args, **kwargs):
        if self.clientid in B_CLIENT_IDS:
            kwargs["port"] = port_b
        return orig(self, *args, **kwargs)

    mod.Client.connect = connect


def run(argv):
    opts = {"--port-b": None, "--timeout": "60"}
    rest = []
    while argv:
        a = argv.pop(0)
        if a in opts:
            opts[a] = argv.pop(0)
        else:
            rest.append(a)
    if len(rest) < 5 or rest[1] not in ("3", "5"):
        sys.exit(__doc__)
    suite, version, host, port, out_path = rest[:5]
    only = rest[5:]
    interop = os.path.join(suite, "interoperability")
    if not os.path.isdir(interop):
        interop = suite
    script = os.path.join(interop, "client_test5.py" if version == "5" else "client_test.py")
    if not os.path.isfile(script):
        sys.exit("paho-interop.py: %s not found (SUITE_DIR is a checkout of eclipse/paho.mqtt.testing)" % script)
    sys.path.insert(0, interop)
    if opts["--port-b"]:
        spread(version, int(opts["--port-b"]))

    def on_alarm(signum, frame):
        raise HarnessTimeout("harness timeout after %ss" % opts["--timeout"])
    signal.signal(signal.SIGALRM, on_alarm)

    ran = []

    def main(*args, **kwargs):
        test_class = sys.modules["__main__"].Test
        loader = unittest.TestLoader()
        suite_tests = loader.loadTestsFromTestCase(test_class)
        if only:
            suite_tests = unittest.TestSuite(
                [t for t in suite_tests if t.id().split(".")[-1] in only])
        with open(out_path, "w") as out:
            result = JSONResult(out, int(opts["--timeout"]))
            suite_tests.run(result)
        ran.append(result.testsRun)

    unittest.main = main
    # `--hostname=`, not `-h`: the suite tests `o in ("--help")`, a substring test that "-h"
    # passes, and then prints its usage and exits.
    sys.argv = [script, "--hostname=" + host, "-p", port]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        sys.exit("paho-interop.py: %s exited (%s) before running its tests" % (script, e.code))
    if not ran or ran[0] == 0:
        sys.exit("paho-interop.py: no test ran from %s%s" % (
            script, " (none is named %s)" % " ".join(only) if only else ""))
    # The suite's receiver threads may still hold sockets: leave without waiting for them.
    sys.stdout.flush()
    os._exit(0)


def table(argv):
    """Prints a Markdown table: one row per test, one column per LABEL=FILE, then totals."""
    cols = []
    for a in argv:
        label, _, path = a.partition("=")
        recs = {}
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                recs[r["test"]] = r
        cols.append((label, recs))
    tests = sorted(set().union(*[recs.keys() for _, recs in cols]))
    mark = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "timeout": "TIMEOUT", "skip": "skip"}
    print("| test | " + " | ".join(label for label, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t in tests:
        cells = [mark.get(recs[t]["result"], recs[t]["result"]) if t in recs else "-" for _, recs in cols]
        print("| %s | %s |" % (t, " | ".join(cells)))
    totals = []
    for _, recs in cols:
        passed = sum(1 for r in recs.values() if r["result"] == "pass")
        totals.append("%d/%d pass" % (passed, len(recs)))
    print("| **total** | " + " | ".join(totals) + " |")
    print()
    first_label, first = cols[0]
    for label, recs in cols[1:]:
        worse = [t for t in tests if t in recs and t in first
                 and first[t]["result"] == "pass" and recs[t]["result"] != "pass"]
        better = [t for t in tests if t in recs and t in first
                  and first[t]["result"] != "pass" and recs[t]["result"] == "pass"]
        print("%s: %d fail(s) that pass on %s%s" % (label, len(worse), first_label, ":" if worse else "."))
        for t in worse:
            print("  %s: %s" % (t, recs[t]["detail"]))
        for t in better:
            print("  (passes here, fails on %s) %s" % (first_label, t))
    both = [t for t in tests if all(t in recs and recs[t]["result"] != "pass" for _, recs in cols)]
    print("fail on every target: %d%s" % (len(both), ":" if both else "."))
    for t in both:
        print("  %s: %s" % (t, first[t]["detail"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        table(sys.argv[2:])
    else:
        sys.exit(__doc__)
