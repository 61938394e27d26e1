"""The Ed25519 signing key (PEM text, created on first start), its file home (mode 0600) and its public JWKS."""

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


def new_pem() -> str:
    """A new Ed25519 private key as PEM text (PKCS8, unencrypted)."""
    private = Ed25519PrivateKey.generate()
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()


def from_pem(pem: str) -> SigningKey:
    """The signing key a PEM text holds; ValueError unless it is an Ed25519 private key."""
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 private key")
    return SigningKey(private, _thumbprint(private.public_key()))


@dataclass(frozen=True)
class KeyFile:
    """The signing key's home when the database does not keep it: the file signing-key.pem (mode 0600) in a data
    directory."""

    data_dir: Path

    @property
    def path(self) -> Path:
        return self.data_dir / KEY_FILE

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> str | None:
        """The PEM in the file, or None when there is no file."""
        return self.path.read_text() if self.path.exists() else None

    def keep(self, pem: str) -> str:
        """Write `pem` (mode 0600, creating the directory) unless a key is there already; the PEM kept (another
        process may have created the file first: its key wins)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.path.read_text()
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return pem


def load_key(data_dir: Path) -> SigningKey | None:
    """The signing key in `data_dir`, or None when there is none yet (nothing is created)."""
    pem = KeyFile(data_dir).read()
    return None if pem is None else from_pem(pem)


def load_or_create(data_dir: Path) -> SigningKey:
    """Load the signing key from `data_dir`, creating the directory and a new key (mode 0600) if absent."""
    home = KeyFile(data_dir)
    return from_pem(home.read() or home.keep(new_pem()))
