"""External issuer over https: a real TLS server on 127.0.0.1 serving a JWKS, fetched with caching and a throttle."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bridge.errors import Unauthorized


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def jwks_server(tmp_path):
    """An https server on 127.0.0.1 serving one RS256 public key; counts fetches."""
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "ext-1", "alg": "RS256", "use": "sig"}]}).encode()
    fetches = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    cert_file, key_file = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}/jwks.json", "ca": str(cert_file),
           "key": signing, "fetches": fetches}
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _external_token(key, kid="ext-1", **overrides):
    now = int(time.time())
    claims = {"iss": "https://idp.example", "aud": "bridge", "agent_id": "ext-agent", "workspace_id": "default",
              "role": "participant", "session_id": "s1", "iat": now, "exp": now + 600, "jti": "j1", **overrides}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_tokens_from_a_jwks_url_verify_and_unknown_kids_are_throttled(make_parts, jwks_server):
    parts = make_parts(jwks_url=jwks_server["url"], jwks_ca_file=jwks_server["ca"], issuer="https://idp.example")
    principal = parts.verifier.verify(_external_token(jwks_server["key"]))
    assert (principal.agent_id, principal.role) == ("ext-agent", "participant")
    for i in range(10):
        with pytest.raises(Unauthorized) as info:
            parts.verifier.verify(_external_token(jwks_server["key"], kid="rotated", jti=f"x{i}"))
        assert info.value.details["reason"] == "unknown_key"
    assert 1 <= len(jwks_server["fetches"]) <= 2  # cached set, refetch throttled


def test_jwks_url_must_be_https(make_parts):
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="https"):
        make_parts(jwks_url="http://127.0.0.1:1/jwks.json")
