"""Unit tests for ward_provenance (python3 -m unittest discover -s clients/python/tests). Tokens are signed here
with a fresh key in the sidecar's format; the integration test in crates/cli/tests/trust_chain.rs checks real ones."""

import base64
import hashlib
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

import ward_provenance as wp  # noqa: E402

NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP256R1())
        n = self.private.public_key().public_numbers()
        x, y = b64(n.x.to_bytes(32, "big")), b64(n.y.to_bytes(32, "big"))
        kid = b64(hashlib.sha256(json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":")).encode()).digest())
        self.jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}

    def mint(self, **overrides):
        claims = {
            "iss": "spiffe://public/ns/default/callee",
            "sub": "spiffe://public/ns/default/caller",
            "aud": "callee",
            "cap": ["orders:write"],
            "htm": "POST",
            "htu": "/orders/1",
            "iat": NOW,
            "exp": NOW + 30,
            "jti": overrides.pop("jti", "j"),
        }
        claims.update(overrides)
        header = {"alg": "ES256", "typ": "ward-provenance+jwt", "kid": self.jwk["kid"]}
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.private.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def check(token, key, **kw):
    args = dict(method="POST", path="/orders/1?x=1", audience="callee", jwks={"keys": [key.jwk]}, production=True,
                now=NOW, replay_cache=wp.ReplayCache())
    args.update(kw)
    return wp.verify(token, **args)


class VerifyTest(unittest.TestCase):
    def test_accepts_a_valid_token(self):
        key = Key()
        v = check(key.mint(), key)
        self.assertEqual(v.caller, "spiffe://public/ns/default/caller")
        self.assertEqual(v.capabilities, ["orders:write"])
        self.assertFalse(v.dev)

    def test_refusals(self):
        key, other = Key(), Key()
        good = key.mint()
        forged = good.rsplit(".", 1)[0] + "." + other.mint().rsplit(".", 1)[1]
        cases = [
            ("missing", None, {}, wp.MissingToken),
            ("garbage", "a.b", {}, wp.MalformedToken),
            ("forged", forged, {}, wp.BadSignature),
            ("unknown key", good, {"jwks": {"keys": [other.jwk]}}, wp.UnknownKey),
            ("expired", good, {"now": NOW + 40}, wp.Expired),
            ("future", good, {"now": NOW - 10}, wp.InvalidTimes),
            ("long lifetime", key.mint(exp=NOW + 61), {}, wp.InvalidTimes),
            ("audience", good, {"audience": "other"}, wp.WrongAudience),
            ("method", good, {"method": "GET"}, wp.MethodMismatch),
            ("path", good, {"path": "/orders/2"}, wp.PathMismatch),
            ("dev in production", key.mint(dev=True, sub="dev:caller"), {}, wp.DevTokenInProduction),
        ]
        for name, token, kw, error in cases:
            with self.subTest(name):
                with self.assertRaises(error):
                    check(token, key, **kw)
                self.assertTrue(issubclass(error, wp.ProvenanceError))

    def test_replay(self):
        key = Key()
        cache = wp.ReplayCache()
        token = key.mint(jti="once")
        check(token, key, replay_cache=cache)
        with self.assertRaises(wp.Replayed):
            check(token, key, replay_cache=cache)

    def test_dev_token_for_a_dev_app(self):
        key = Key()
        v = check(key.mint(dev=True, sub="dev:caller"), key, production=False)
        self.assertTrue(v.dev)
        self.assertEqual(v.caller, "dev:caller")


if __name__ == "__main__":
    unittest.main()
