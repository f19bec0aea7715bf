#!/usr/bin/env python3
"""The cost of each callee-side control, end to end: runs the release `invoke_bench` example once per variant
(same mTLS pair, same echo app, same load) and prints added latency at 1000 req/s and saturation throughput.

    cargo build --release -p ward --examples
    scripts/bench-pipelines.py [seconds] [variant ...]

Variants: base (no Configuration), acl (an accessControl policy), acl-noprov (the same without the provenance
token), bearer (a bearer middleware with a cached ES256
key, JWKS from a loopback HTTP server), opa (a small Rego policy), capability (a route requiring a capability plus
the provenance token), mcp-call (MCP rules on a small tools/call), mcp-off-call (same body, rules off), mcp-list
(filtering a 200-tool tools/list answer), mcp-off-list (same answer, rules off).
Needs the Python of scripts/test-venv.sh (for `cryptography`) only for the bearer variant.
Loopback only; every process it starts is stopped.
"""
import base64
import http.server
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BENCH = TARGET / "release" / "examples" / "invoke_bench"

ACL = """  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: caller
      namespace: default
      trustDomain: public
      operations:
      - {name: /orders, httpVerb: [POST], action: allow}
      - {name: /mcp, httpVerb: [POST], action: allow}
"""


def config(spec: str) -> str:
    return f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: callee\nspec:\n{spec}"


def component(name: str, kind: str, metadata: dict) -> str:
    items = "".join(f"  - name: {k}\n    value: {json.dumps(v)}\n" for k, v in metadata.items())
    return f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n{items}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer_material(issuer: str):
    """An ES256 key, its JWKS and a token valid for an hour (cryptography only)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    import time

    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "alg": "ES256",
           "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}
    header = b64(json.dumps({"alg": "ES256", "kid": "bench", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": issuer, "aud": "bench", "exp": int(time.time()) + 3600}).encode())
    der = key.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return {"keys": [jwk]}, f"{header}.{claims}.{signature}"


def serve_jwks(jwks: dict) -> str:
    body = json.dumps(jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks"


def variants(work: pathlib.Path):
    tools = [{"name": f"tool_{i:03}", "inputSchema": {"type": "object"}} for i in range(200)]
    (work / "list.json").write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "tool_001", "arguments": {"q": "x"}}})
    listing = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    mcp_rules = "  ward:\n    mcp:\n      endpoint: /mcp\n      rules:\n      - callers: [caller]\n        allow: [\"tool_00*\"]\n"
    opa = "package http\ndefault allow = false\nallow = true { input.request.method == \"POST\"; input.request.path == \"/orders\" }\n"
    return {
        "base": {},
        "acl": {"config": config(ACL)},
        "acl-noprov": {"config": config(ACL + "  ward:\n    provenance:\n      enabled: false\n")},
        "opa": {"config": config(ACL + "  appHttpPipeline:\n    handlers:\n    - {name: policy, type: middleware.http.opa}\n"),
                "resources": {"opa.yaml": component("policy", "middleware.http.opa", {"rego": opa})}},
        "bearer": "bearer",
        "capability": {"config": config(ACL + "  ward:\n    capabilities:\n      grants:\n      - {appId: caller, namespace: default, capabilities: [\"orders:create\"]}\n      routes:\n      - {name: /orders, httpVerb: [POST], requires: [\"orders:create\"]}\n")},
        "mcp-off-call": {"config": config(ACL), "path": "mcp", "body": call},
        "mcp-call": {"config": config(ACL + mcp_rules), "path": "mcp", "body": call},
        "mcp-off-list": {"config": config(ACL), "path": "mcp", "body": listing, "reply": "list.json"},
        "mcp-list": {"config": config(ACL + mcp_rules), "path": "mcp", "body": listing, "reply": "list.json"},
    }


def run(name: str, variant: dict, work: pathlib.Path, seconds: str) -> str:
    env = dict(os.environ)
    vdir = work / name
    vdir.mkdir()
    if "config" in variant:
        (vdir / "config.yaml").write_text(variant["config"])
        env["WARD_BENCH_CALLEE_CONFIG"] = str(vdir / "config.yaml")
    if "resources" in variant:
        res = vdir / "resources"
        res.mkdir()
        for file, text in variant["resources"].items():
            (res / file).write_text(text)
        env["WARD_BENCH_CALLEE_RESOURCES"] = str(res)
    for key, var in (("path", "WARD_BENCH_PATH"), ("body", "WARD_BENCH_BODY"), ("header", "WARD_BENCH_HEADER")):
        if key in variant:
            env[var] = variant[key]
    if "reply" in variant:
        env["WARD_BENCH_APP_REPLY"] = str(work / variant["reply"])
    out = subprocess.run([str(BENCH), seconds], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return f"{name}: FAILED\n{out.stdout}\n{out.stderr[-2000:]}"
    return "\n".join(f"{name}: {line}" for line in out.stdout.splitlines() if line.startswith(("fixed", "saturation")))


def main() -> None:
    seconds = sys.argv[1] if len(sys.argv) > 1 else "10"
    wanted = sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        table = variants(work)
        if "bearer" in (wanted or table):
            jwks, token = bearer_material("https://bench.issuer")
            url = serve_jwks(jwks)
            table["bearer"] = {
                "config": config(ACL + "  appHttpPipeline:\n    handlers:\n    - {name: bearer, type: middleware.http.bearer}\n"),
                "resources": {"bearer.yaml": component("bearer", "middleware.http.bearer",
                                                       {"issuer": "https://bench.issuer", "audience": "bench", "jwksURL": url})},
                "header": f"authorization: Bearer {token}",
            }
        for name in wanted or table:
            print(run(name, table[name], work, seconds), flush=True)


if __name__ == "__main__":
    main()
