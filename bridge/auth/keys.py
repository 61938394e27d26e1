"""The local Ed25519 signing key (created on first start, file mode 0600) and its public JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_FILE = "signing-key.pem"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair with its key id (RFC 7638 thumbprint)."""

    private: Ed25519PrivateKey
    kid: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw), "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def _thumbprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())[:16]


def load_key(data_dir: Path) -> SigningKey | None:
    """The signing key in `data_dir`, or None when there is none yet (nothing is created)."""
    path = data_dir / KEY_FILE
    return _read(path) if path.exists() else None


def load_or_create(data_dir: Path) -> SigningKey:
    """Load the signing key from `data_dir`, creating the directory and a new key (mode 0600) if absent."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    if not path.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create(data_dir)  # another process created it first
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    return _read(path)


def _read(path: Path) -> SigningKey:
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return SigningKey(private, _thumbprint(private.public_key()))
