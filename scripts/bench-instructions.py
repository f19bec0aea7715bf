#!/usr/bin/env python3
"""Userspace instructions per invocation of each sidecar of an mTLS pair, counted by valgrind's callgrind.

    cargo build --release -p ward --bin ward
    scripts/bench-instructions.py [requests] [--ward PATH] [--keep]

The pair is the one `docs/benchmarks.md` measures side by side with nginx: `ward sentry`, a caller sidecar, a callee
sidecar with an `accessControl` policy, the audit log and the provenance token on (the defaults), and a small HTTP
app that answers 1 KiB. After a warm-up, the counters of both sidecars are zeroed, `requests` GET invocations go
through the caller's HTTP API over 8 keep-alive connections, and the counters are dumped. The figures are
instruction counts, not times: they do not move with the machine's load, so a change of a few percent on the
request path shows, where CPU-time ratios on a shared 2-core machine vary by ±5 % run to run. Kernel work (loopback
TCP, about 35-45 % of each sidecar's CPU) is not counted, and crypto runs valgrind's baseline code paths (no
SHA-NI/ADX), so compare counts with counts, never with `sidecar_vs_nginx.py`'s microseconds.
`--keep` leaves the callgrind files for `callgrind_annotate`. Needs valgrind. Loopback only; every process it
starts is stopped.
"""
import argparse
import glob
import http.client
import http.server
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BODY = b"x" * 1024
CALLEE_CONFIG = """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: callee}
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: caller
      defaultAction: deny
      trustDomain: public
      namespace: default
      operations:
      - {name: /x, httpVerb: [GET], action: allow}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return None
    finally:
        c.close()


def load(port, path, total, conns=8):
    """`total` GETs over `conns` keep-alive connections; returns how many were not 200."""
    failures = []

    def worker(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        bad = 0
        for _ in range(n):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            bad += r.status != 200
        c.close()
        failures.append(bad)

    threads = [threading.Thread(target=worker, args=(total // conns + (i < total % conns),)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(failures)


def main():
    parser = argparse.ArgumentParser(description="instructions per invocation of each sidecar (callgrind)")
    parser.add_argument("requests", type=int, nargs="?", default=3000)
    parser.add_argument("--ward", default=str(TARGET / "release" / "ward"))
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    opts = parser.parse_args()
    requests, ward = opts.requests, os.path.abspath(opts.ward)
    d = tempfile.mkdtemp(prefix="ward-instructions-")
    home = f"{d}/home"
    os.makedirs(home)
    subprocess.run([ward, "mtls", "init", "--dir", f"{d}/ca"], check=True, capture_output=True)
    with open(f"{d}/callee.yaml", "w") as f:
        f.write(CALLEE_CONFIG)
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    sentry, caller_http, callee_http = free_port(), free_port(), free_port()
    env = {**os.environ, "WARD_HOME": home}
    procs = {}

    def start(name, argv):
        procs[name] = subprocess.Popen(argv, env=env, stdout=open(f"{d}/{name}.log", "w"), stderr=subprocess.STDOUT)

    def sidecar(app_id, http_port, extra):
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/{app_id}.%p.out"]
        return vg + [ward, "sidecar", "--app-id", app_id, "--dapr-http-port", str(http_port),
                     "--dapr-grpc-port", str(free_port()), "--dapr-internal-grpc-port", str(free_port()),
                     "--metrics-port", str(free_port()), "--enable-mtls", "--sentry-address", f"127.0.0.1:{sentry}",
                     "--trust-anchors-file", f"{d}/ca/ca.crt", *extra]

    try:
        start("sentry", [ward, "sentry", "--issuer-credentials", f"{d}/ca", "--trust-domain", "public",
                         "--port", str(sentry), "--healthz-port", str(free_port())])
        time.sleep(0.5)
        start("callee", sidecar("callee", callee_http,
                                ["--app-port", str(app.server_address[1]), "--config", f"{d}/callee.yaml"]))
        start("caller", sidecar("caller", caller_http, []))
        path = "/v1.0/invoke/callee/method/x"
        deadline = time.time() + 120
        while get(caller_http, path) != 200:
            if time.time() > deadline:
                sys.exit(f"the pair did not come up; logs in {d}")
            time.sleep(0.5)
        load(caller_http, path, 1000)
        for name in ("caller", "callee"):
            subprocess.run(["callgrind_control", "--zero", str(procs[name].pid)], capture_output=True,
                           timeout=60, check=True)
        failed = load(caller_http, path, requests)
        for name in ("caller", "callee"):
            subprocess.run(["callgrind_control", "--dump", str(procs[name].pid)], capture_output=True,
                           timeout=120, check=True)
        time.sleep(1)
        if failed:
            sys.exit(f"{failed} of {requests} invocations were not answered 200; logs in {d}")
        print(f"{requests} invocations (GET, 1 KiB answer, ACL + audit + provenance on), {os.path.basename(ward)}")
        for name in ("caller", "callee"):
            pid = procs[name].pid
            dumps = sorted(glob.glob(f"{d}/{name}.{pid}.out.*"))
            total = 0
            for line in open(dumps[-1], errors="replace"):
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
            print(f"  {name:6}: {total / requests:9,.0f} instructions per request   ({dumps[-1]})")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        app.shutdown()
        if not opts.keep:
            for f in glob.glob(f"{d}/*.out*"):
                os.remove(f)


if __name__ == "__main__":
    main()
