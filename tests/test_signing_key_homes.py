"""Where the signing key lives. On PostgreSQL, in the database: servers and CLIs on several hosts (each with its own
data directory) sign and verify with one key, and two servers starting at once on an empty database end with one.
On SQLite, the file signing-key.pem (mode 0600) beside the database: the key never goes into the SQLite file."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

from click.testing import CliRunner

from bridge.auth.keys import KEY_FILE, new_pem
from bridge.cli.main import cli
from bridge.settings import Settings
from bridge.store.engines import opened
from bridge.store.keys import KeptKey
from bridge.testing.database import rows
from bridge.testing.processes import unused_port
from bridge.testing.tokens import Minter
from bridge.wiring import Parts, build, signing_key


def host_settings(db: str | Path, data_dir: Path) -> Settings:
    """The settings of a bridge process on one host: its own data directory."""
    return Settings.load({"db": str(db)}, env={"BRIDGE_DATA_DIR": str(data_dir)})


def list_threads(server, token: str) -> int:
    return server.client.raw("POST", "/v1/mcp/list_threads", json={},
                             headers={"Authorization": f"Bearer {token}"}).status


def test_hosts_sharing_a_postgresql_database_sign_with_its_one_key(postgres_url, tmp_path, serve_parts):
    a, b = host_settings(postgres_url, tmp_path / "host-a"), host_settings(postgres_url, tmp_path / "host-b")
    host_a, host_b = build(a), build(b)
    try:
        assert host_a.key.kid == host_b.key.kid
        server_a, server_b = serve_parts(host_a), serve_parts(host_b)
        minted_on_b, minted_on_a = Minter(host_b.key, b)("rev"), Minter(host_a.key, a)("dev")
        assert list_threads(server_a, minted_on_b) == 200
        assert list_threads(server_b, minted_on_a) == 200
        # the CLI on a third host signs with the same key
        issued = CliRunner().invoke(cli, ["token", "issue", "--agent-id", "ops", "--role", "coordinator", "--db",
                                          postgres_url, "--url", server_a.url, "--json"],
                                    env={"BRIDGE_DATA_DIR": str(tmp_path / "host-c")})
        assert issued.exit_code == 0, issued.output
        assert json.loads(issued.stdout)["kid"] == host_a.key.kid
        assert list_threads(server_b, json.loads(issued.stdout)["token"]) == 200
    finally:
        host_a.close()
        host_b.close()
    assert len(rows(postgres_url, "SELECT name FROM signing_keys")) == 1
    assert not any((tmp_path / host / KEY_FILE).exists() for host in ("host-a", "host-b", "host-c"))


def test_servers_starting_at_once_on_an_empty_postgresql_database_keep_one_key(postgres_url, tmp_path):
    stores = [opened(postgres_url) for _ in range(4)]
    entered = [store.__enter__() for store in stores]
    try:
        start, kids = threading.Barrier(len(entered)), []

        def start_up(number: int) -> None:
            start.wait()
            key = signing_key(entered[number], tmp_path / f"host-{number}", create=True)
            kids.append(None if key is None else key.kid)
        racers = [threading.Thread(target=start_up, args=(n,)) for n in range(len(entered))]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert len(kids) == len(entered) and len(set(kids)) == 1 and None not in kids
        # the first key kept wins: a later one is not kept, the winner is returned
        home = KeptKey(entered[0].query, entered[0].write)
        winner = home.read()
        assert home.keep(new_pem()) == winner
    finally:
        for store in stores:
            store.__exit__(None, None, None)
    assert len(rows(postgres_url, "SELECT name FROM signing_keys")) == 1


def test_a_sqlite_bridge_keeps_its_key_in_a_file_never_in_the_database(tmp_path, serve_parts):
    db = tmp_path / "bridge.db"
    parts: Parts = build(Settings.load({"db": str(db)}, env={}))
    try:
        assert list_threads(serve_parts(parts), Minter(parts.key, parts.bridge.settings)("rev")) == 200
        pem = (parts.data_dir / KEY_FILE).read_text()
    finally:
        parts.close()
    assert stat.S_IMODE((parts.data_dir / KEY_FILE).stat().st_mode) == 0o600
    assert rows(db, "SELECT name FROM signing_keys") == []
    body = pem.splitlines()[1].encode()  # a line of the key's base64 text
    for file in tmp_path.glob("bridge.db*"):
        assert b"PRIVATE KEY" not in file.read_bytes() and body not in file.read_bytes(), file


def test_doctor_reports_the_key_a_postgresql_database_keeps(postgres_url, tmp_path):
    def key_check() -> dict:
        result = CliRunner().invoke(cli, ["doctor", "--db", postgres_url, "--port", str(unused_port()), "--json"],
                                    env={"BRIDGE_DATA_DIR": str(tmp_path / "host")})
        return {c["check"]: c for c in json.loads(result.stdout)["checks"]}["signing key"]

    assert "none in" in key_check()["detail"]
    parts = build(host_settings(postgres_url, tmp_path / "server"))
    try:
        kid = parts.key.kid
    finally:
        parts.close()
    check = key_check()
    assert check["ok"] and check["required"]
    assert "kept in the database" in check["detail"] and kid in check["detail"]
    assert not (tmp_path / "host" / KEY_FILE).exists()
