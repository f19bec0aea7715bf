"""A stand-in identity provider for the example, on 127.0.0.1:6199 (standard library + `cryptography`, which the MCP
SDK installs): it serves its signing key as a JWKS at /jwks and hands out short-lived ES256 tokens at
/token?sub=<app-id>&aud=<audience>. In production this is your OIDC provider; the tools server's bearer middleware
only needs its issuer, audience and JWKS URL (components/bearer.yaml). Start it before `ward run`: the middleware
fetches the keys when the sidecar starts.

    python3 examples/mcp-agent/idp.py [port]
"""
import base64
import http.server
import json
import sys
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 6199
ISSUER = f"http://127.0.0.1:{PORT}"
KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks() -> dict:
    numbers = KEY.public_key().public_numbers()
    return {"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "use": "sig", "alg": "ES256",
                      "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}]}


def token(sub: str, aud: str) -> str:
    now = int(time.time())
    header = b64(json.dumps({"alg": "ES256", "kid": "idp-1", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + 600}).encode())
    r, s = decode_dss_signature(KEY.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{claims}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/jwks":
            body = json.dumps(jwks()).encode()
        elif url.path == "/token":
            body = token(query.get("sub", ["anonymous"])[0], query.get("aud", [""])[0]).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"idp: issuer {ISSUER}, JWKS at {ISSUER}/jwks", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
