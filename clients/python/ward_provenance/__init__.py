"""Verify the ward sidecar's provenance token (issue 15, layer four of the trust chain).

The app's own ward sidecar signs one short-lived compact JWS (ES256) for every request it hands the app and sets
it as the ``ward-provenance`` header (gRPC metadata of the same name). The app fetches the public keys from its
sidecar (``GET /v1.0-alpha1/ward/provenance/jwks`` with its API token) and calls :func:`verify`. A request that
reached the app without passing through its sidecar has no valid token and is refused.

This module owns only verification; the token format, the checks and their order are the same as in the Rust
crate ``ward-provenance`` (``crates/provenance/src/lib.rs``): keep the two in step. Standard library and
``cryptography`` only.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "HEADER",
    "verify",
    "Verified",
    "ReplayCache",
    "ProvenanceError",
    "MissingToken",
    "MalformedToken",
    "UnsupportedAlgorithm",
    "UnknownKey",
    "BadSignature",
    "Expired",
    "InvalidTimes",
    "WrongAudience",
    "MethodMismatch",
    "PathMismatch",
    "DevTokenInProduction",
    "Replayed",
    "ReplayCacheFull",
]

HEADER = "ward-provenance"
TOKEN_TYPE = "ward-provenance+jwt"
ALGORITHM = "ES256"
MAX_LIFETIME_SECS = 60
LEEWAY_SECS = 2
MAX_TOKEN_LEN = 8 * 1024
REPLAY_CACHE_CAPACITY = 1 << 20


class ProvenanceError(Exception):
    """The token was refused. Subclasses name the reason."""


class MissingToken(ProvenanceError):
    """No token: the request did not come through the sidecar."""


class MalformedToken(ProvenanceError):
    """Not a compact JWS of the expected shape."""


class UnsupportedAlgorithm(ProvenanceError):
    """An algorithm or type other than ES256 / ward-provenance+jwt."""


class UnknownKey(ProvenanceError):
    """No JWKS key has the token's kid (fetch the JWKS again: the sidecar may have rotated its key)."""


class BadSignature(ProvenanceError):
    """The signature does not verify."""


class Expired(ProvenanceError):
    """The token's lifetime is over."""


class InvalidTimes(ProvenanceError):
    """Issued in the future, or a lifetime beyond 60 seconds."""


class WrongAudience(ProvenanceError):
    """The token is for another app."""


class MethodMismatch(ProvenanceError):
    """The token is for another HTTP method."""


class PathMismatch(ProvenanceError):
    """The token is for another path."""


class DevTokenInProduction(ProvenanceError):
    """A development-mode token reached a production verifier."""


class Replayed(ProvenanceError):
    """The token's jti was already used within its lifetime."""


class ReplayCacheFull(ProvenanceError):
    """Too many live tokens remembered: refused rather than forgetting one."""


@dataclass(frozen=True)
class Verified:
    """What a valid token says."""

    caller: str
    """The verified caller's SPIFFE ID, or ``dev:<app-id>`` for a development token."""
    capabilities: List[str]
    dev: bool
    claims: Dict[str, Any] = field(repr=False)


class ReplayCache:
    """The ``jti`` values seen and still within their lifetime (thread-safe, bounded)."""

    def __init__(self, capacity: int = REPLAY_CACHE_CAPACITY) -> None:
        self._seen: Dict[str, int] = {}
        self._capacity = max(1, capacity)
        self._lock = threading.Lock()

    def check_and_insert(self, jti: str, exp: int, now: int) -> None:
        with self._lock:
            until = self._seen.get(jti)
            if until is not None and until + LEEWAY_SECS >= now:
                raise Replayed(f"provenance token {jti!r} was already used")
            if len(self._seen) >= self._capacity:
                self._seen = {k: v for k, v in self._seen.items() if v + LEEWAY_SECS >= now}
                if len(self._seen) >= self._capacity:
                    raise ReplayCacheFull(f"replay cache is full ({self._capacity} live tokens)")
            self._seen[jti] = exp


_GLOBAL_CACHE = ReplayCache()


def _b64decode(part: str) -> bytes:
    if not part or any(c in part for c in "=+/ \t\r\n"):
        raise MalformedToken("malformed provenance token: encoding")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as err:
        raise MalformedToken("malformed provenance token: encoding") from err


def _json(part: str, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(_b64decode(part))
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedToken(f"malformed provenance token: {what}") from err
    if not isinstance(value, dict):
        raise MalformedToken(f"malformed provenance token: {what}")
    return value


def _public_key(jwk: Dict[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise MalformedToken("JWKS key is not an EC P-256 key")
    x, y = _b64decode(str(jwk.get("x", ""))), _b64decode(str(jwk.get("y", "")))
    if len(x) != 32 or len(y) != 32:
        raise MalformedToken("JWKS key is not an EC P-256 key")
    try:
        numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
        return numbers.public_key()
    except ValueError as err:
        raise MalformedToken("JWKS key is not on the P-256 curve") from err


def _claim(claims: Dict[str, Any], name: str, kind: type) -> Any:
    value = claims.get(name)
    # bool is an int in Python; a time claim must be a real integer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedToken(f"malformed provenance token: claim {name}")
    return value


def _path_matches(htu: str, received: str) -> bool:
    path = received.split("?", 1)[0].split("#", 1)[0]
    if path == htu:
        return True
    try:
        return urllib.parse.unquote(path, errors="strict") == htu
    except UnicodeDecodeError:
        return False


def verify(
    token: Optional[str],
    *,
    method: str,
    path: str,
    audience: str,
    jwks: Dict[str, Any],
    production: bool,
    now: Optional[int] = None,
    replay_cache: Optional[ReplayCache] = None,
) -> Verified:
    """Verify ``token`` (the ``ward-provenance`` header, ``None`` when absent) against the request the app received.

    ``method`` and ``path`` are the request's (a query string is ignored; the path may be percent-encoded as
    received), ``audience`` the app's own id, ``jwks`` the document from the sidecar's JWKS endpoint, ``production``
    refuses development tokens. ``now`` (Unix seconds) and ``replay_cache`` default to the clock and a process-wide
    cache. Raises a :class:`ProvenanceError` subclass; a token is remembered (for replay) only once every other
    check passed.
    """
    if token is None or not token.strip():
        raise MissingToken("no provenance token: the request did not come through the sidecar")
    token = token.strip()
    if len(token) > MAX_TOKEN_LEN:
        raise MalformedToken("malformed provenance token: too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("malformed provenance token: not three dot-separated parts")
    h64, p64, s64 = parts
    header = _json(h64, "header")
    if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise UnsupportedAlgorithm(f"provenance token has alg {header.get('alg')!r} typ {header.get('typ')!r}")
    kid = header.get("kid")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    jwk = next((k for k in keys or [] if isinstance(k, dict) and k.get("kid") == kid), None)
    if jwk is None:
        raise UnknownKey(f"provenance token signed by unknown key {kid!r}")
    key = _public_key(jwk)
    signature = _b64decode(s64)
    if len(signature) != 64:
        raise BadSignature("provenance token signature is invalid")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, f"{h64}.{p64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise BadSignature("provenance token signature is invalid") from err
    claims = _json(p64, "claims")

    iat, exp = _claim(claims, "iat", int), _claim(claims, "exp", int)
    now = int(time.time()) if now is None else now
    if exp <= iat or exp - iat > MAX_LIFETIME_SECS or iat > now + LEEWAY_SECS:
        raise InvalidTimes(f"provenance token times are invalid (iat {iat}, exp {exp}, now {now})")
    if now >= exp + LEEWAY_SECS:
        raise Expired(f"provenance token expired at {exp} (now {now})")
    aud = _claim(claims, "aud", str)
    if aud != audience:
        raise WrongAudience(f"provenance token is for app {aud!r}, not {audience!r}")
    dev = claims.get("dev") is True
    if dev and production:
        raise DevTokenInProduction("development provenance token refused in production")
    htm = _claim(claims, "htm", str)
    if htm.upper() != method.upper():
        raise MethodMismatch(f"provenance token is for method {htm!r}, not {method!r}")
    htu = _claim(claims, "htu", str)
    if not _path_matches(htu, path):
        raise PathMismatch(f"provenance token is for path {htu!r}, not {path!r}")
    caps = _claim(claims, "cap", list)
    if not all(isinstance(c, str) for c in caps):
        raise MalformedToken("malformed provenance token: claim cap")
    sub = _claim(claims, "sub", str)
    jti = _claim(claims, "jti", str)
    (replay_cache or _GLOBAL_CACHE).check_and_insert(jti, exp, now)
    return Verified(caller=sub, capabilities=list(caps), dev=dev, claims=claims)
