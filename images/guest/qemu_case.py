#!/usr/bin/env python3
"""Runs one QEMU guest and walks it through ordered steps (used by test.sh; python3 stdlib).

  qemu_case.py --name NAME --log FILE [--qmp SOCK] [--step-timeout S] STEP... -- QEMU ARGV...

QEMU's serial port must be on stdio (`-serial stdio -monitor none -display none`): this script
reads it (copying it to --log) and writes to it. Steps, run in the order given:

  --wait TEXT         wait until TEXT appears in the serial output (searched from the last
                      --send on); prints the seconds since QEMU was started
  --send LINE         type LINE and Enter on the serial console
  --http URL TEXT     poll `curl URL` (loopback URLs only) until the body contains TEXT
  --powerdown         QMP system_powerdown (ACPI power button); needs --qmp
  --exit CODE         wait until QEMU exits by itself, with status CODE
  --within SECONDS    timeout of the steps that follow (default --step-timeout, 60)

Exit status 0 if every step passed; otherwise 1, with the tail of the serial log.
Each timing is also written as "NAME<TAB>TEXT<TAB>SECONDS" to --times if given.
"""
import argparse, json, os, signal, socket, subprocess, sys, threading, time, urllib.parse


class Step(argparse.Action):
    def __call__(self, parser, ns, values, option_string=None):
        ns.steps = (getattr(ns, "steps", None) or []) + [(self.dest, values)]


class Serial:
    def __init__(self, proc, logpath):
        self.proc, self.buf, self.lock = proc, b"", threading.Lock()
        self.log = open(logpath, "wb")
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()

    def _reader(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                b = os.read(fd, 4096)
            except OSError:
                b = b""
            if not b:
                break
            with self.lock:
                self.buf += b
            self.log.write(b)
            self.log.flush()

    def find(self, text, start):
        with self.lock:
            return self.buf.find(text.encode(), start)

    def pos(self):
        with self.lock:
            return len(self.buf)

    def send(self, line):
        # Type it slowly enough for the 16550 FIFO, like a person (or virtctl console) would.
        for ch in (line + "\r").encode():
            self.proc.stdin.write(bytes([ch]))
            self.proc.stdin.flush()
            time.sleep(0.01)

    def tail(self, n=40):
        with self.lock:
            lines = self.buf.decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def qmp(path, command):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    f = s.makefile("rw")
    f.readline()  # greeting
    for cmd in ("qmp_capabilities", command):
        f.write(json.dumps({"execute": cmd}) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                break
        if "error" in r:
            raise RuntimeError("QMP %s: %s" % (cmd, r["error"]))
    s.close()


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("qemu_case.py: missing -- QEMU ARGV")
    i = argv.index("--")
    opts, qemu = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--qmp")
    ap.add_argument("--times")
    ap.add_argument("--step-timeout", type=float, default=60)
    ap.add_argument("--wait", action=Step)
    ap.add_argument("--send", action=Step)
    ap.add_argument("--http", action=Step, nargs=2)
    ap.add_argument("--powerdown", action=Step, nargs=0)
    ap.add_argument("--exit", action=Step, type=int)
    ap.add_argument("--within", action=Step, type=float)
    a = ap.parse_args(opts)
    steps = getattr(a, "steps", None) or []

    name = a.name
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    ser = Serial(proc, a.log)
    since = 0
    timeout = a.step_timeout

    def elapsed():
        return time.monotonic() - t0

    def fail(msg):
        print("FAIL [%s] %s (at %.1f s)" % (name, msg, elapsed()))
        print("---- last serial lines (%s) ----" % a.log)
        print(ser.tail())
        print("----")
        return False

    def run():
        nonlocal since, timeout
        powerdown_at = None
        for kind, val in steps:
            start = time.monotonic()
            deadline = start + timeout
            if kind == "within":
                timeout = val
            elif kind == "wait":
                while ser.find(val, since) < 0:
                    if proc.poll() is not None:
                        return fail("QEMU exited (%s) before %r" % (proc.returncode, val))
                    if time.monotonic() > deadline:
                        return fail("no %r within %g s" % (val, timeout))
                    time.sleep(0.05)
                t = elapsed()
                print("ok   [%s] %-40s %6.1f s after QEMU start" % (name, val, t))
                if a.times:
                    with open(a.times, "a") as f:
                        f.write("%s\t%s\t%.1f\n" % (name, val, t))
            elif kind == "send":
                since = ser.pos()
                ser.send(val)
                print("ok   [%s] typed %r" % (name, val))
            elif kind == "http":
                url, want = val
                host = urllib.parse.urlsplit(url).hostname
                if host not in ("127.0.0.1", "localhost", "::1"):
                    return fail("refusing non-loopback URL %s" % url)
                body = ""
                while True:
                    r = subprocess.run(["curl", "-s", "-m", "3", url], capture_output=True, text=True)
                    body = r.stdout
                    if r.returncode == 0 and want in body:
                        break
                    if proc.poll() is not None:
                        return fail("QEMU exited before %s answered" % url)
                    if time.monotonic() > deadline:
                        return fail("curl %s: no %r within %g s (rc %d, body %r)" % (url, want, timeout, r.returncode, body[:200]))
                    time.sleep(0.5)
                print("ok   [%s] curl %s -> %r %6.1f s after QEMU start" % (name, url, body.strip()[:60], elapsed()))
            elif kind == "powerdown":
                try:
                    qmp(a.qmp, "system_powerdown")
                except Exception as e:  # noqa
                    return fail("QMP system_powerdown: %s" % e)
                print("ok   [%s] QMP system_powerdown at %.1f s" % (name, elapsed()))
                powerdown_at = time.monotonic()
            elif kind == "exit":
                try:
                    rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    return fail("QEMU still running %g s later" % timeout)
                if rc != val:
                    return fail("QEMU exited with %d, want %d" % (rc, val))
                ref = powerdown_at if powerdown_at is not None else start
                print("ok   [%s] QEMU exited %d by itself, %.1f s after %s" % (
                    name, rc, time.monotonic() - ref, "system_powerdown" if powerdown_at is not None else "the step began"))
        return True

    try:
        ok = run()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        ser.t.join(timeout=5)
        ser.log.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
