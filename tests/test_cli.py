"""The command line: key creation stores only a hash; commands fail clearly on bad input."""

from __future__ import annotations

from typer.testing import CliRunner

from gateway.cli import app
from gateway.store import Store


def test_keys_create_prints_a_key_once_and_stores_only_its_hash(tmp_path, monkeypatch):
    db = tmp_path / "gw.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    result = CliRunner().invoke(app, ["keys", "create", "ci"])
    assert result.exit_code == 0, result.output
    key = result.output.split()[0]
    assert key.startswith("gw_") and len(key) > 40
    store = Store(f"sqlite:///{db}")
    assert store.verify_api_key(key) and not store.verify_api_key(key + "x")
    assert key.encode() not in db.read_bytes()


def test_keys_create_for_a_tenant(tmp_path, monkeypatch):
    db = tmp_path / "gw.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    result = CliRunner().invoke(app, ["keys", "create", "ops", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    assert "tenant acme" in result.output
    assert Store(f"sqlite:///{db}").authenticate_api_key(result.output.split()[0]).tenant == "acme"
    bad = CliRunner().invoke(app, ["keys", "create", "ops", "--tenant", "Acme_Corp"])
    assert bad.exit_code == 2 and "--tenant" in bad.output


def test_call_with_an_unknown_carrier_dialect_fails_clearly(shared_audio):
    wav = str(shared_audio / "caller" / "hello.wav")
    result = CliRunner().invoke(app, ["call", "ws://127.0.0.1:9/x", "--carrier", "nope", "--wav", wav])
    assert result.exit_code == 2
    assert "--carrier" in result.output and "twilio" in result.output
