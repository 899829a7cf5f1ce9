"""Outbound URL policy (gateway.netpolicy) and its I/O (gateway.outbound): static checks,
resolution, and a pinned transport over real loopback sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.llm.tool_runner import ToolRunner
from gateway.llm.tools import ToolCall, parse_tools
from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.outbound import OutboundTransport, check_outbound_url, outbound_client

STRICT = OutboundPolicy()


@pytest.mark.parametrize("url", [
    "https://10.0.0.5/x", "https://172.16.0.1/x", "https://192.168.1.1/x",
    "https://127.0.0.1/x", "https://127.8.9.10:8443/x", "https://localhost/x", "https://api.localhost/x",
    "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
    "https://100.64.0.1/x",  # shared address space (CGNAT)
    "https://0.0.0.0/x", "https://[::]/x", "https://[::1]/x", "https://[fe80::1]/x", "https://[fc00::1]/x",
    "https://224.0.0.1/x", "https://[ff02::1]/x",  # multicast
    "https://240.0.0.1/x", "https://255.255.255.255/x",  # reserved, broadcast
    "https://[::ffff:10.0.0.1]/x", "https://[::ffff:127.0.0.1]/x",  # IPv4-mapped
    "https://[64:ff9b::a00:1]/x",  # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::]/x", "https://[2002:a9fe:a9fe::1]/x",  # 6to4 of 127.0.0.1, 169.254.169.254
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",  # Teredo, client 192.0.2.45
    "https://[2001:0:808:808:0:0:80ff:fffe]/x",  # Teredo, client 127.0.0.1 (obfuscated 0x80fffffe)
    "https://127.1/x", "https://0x7f000001/x", "https://2130706433/x", "https://0177.0.0.1/x",  # as inet_aton reads
    "https://0xa9.254.169.254/x", "https://10.1/x",
    "https://localhost./x", "https://api.localhost./x", "https://127.0.0.1./x",  # trailing dot
    "http://tools.example.com/x", "ftp://tools.example.com/x", "https:///x", "not a url",
])  # fmt: skip
def test_static_check_refuses_non_public_targets_and_plain_http(url):
    with pytest.raises(OutboundRefused):
        STRICT.check_static(url)


@pytest.mark.parametrize("url", [
    "https://tools.example.com/book", "https://8.8.8.8/x", "https://[2001:4860:4860::8888]/x",
    "https://[2002:808:808::1]/x",  # 6to4 of 8.8.8.8
    "https://1e100.net/x", "https://123.example/x", "https://0x1.example/x", "https://tools.example.com./x",
])  # fmt: skip
def test_static_check_passes_public_https(url):
    STRICT.check_static(url)


def test_resolved_6to4_and_teredo_addresses_are_checked_inside():
    for wrapped in ("2002:7f00:1::", "2002:a00:1::5", "2001:0:808:808:0:0:80ff:fffe"):
        with pytest.raises(OutboundRefused):
            STRICT.check_addresses("t.example", 443, [wrapped])
    assert STRICT.check_addresses("t.example", 443, ["2002:808:808::1"]) == ["2002:808:808::1"]
    assert OutboundPolicy(("127.0.0.1",)).check_addresses("t.example", 443, ["2002:7f00:1::"])


def test_allow_list_entries():
    policy = OutboundPolicy(("10.0.0.0/8", "127.0.0.1:9000", "[::1]:9001", "tools.internal", "metrics.internal:8443"))
    policy.check_static("https://10.1.2.3/x")
    policy.check_static("https://[::ffff:10.1.2.3]/x")  # the mapped form of an allowed address
    policy.check_static("http://127.0.0.1:9000/x")  # http is fine to an allowed target
    policy.check_static("http://[::1]:9001/x")
    policy.check_static("http://tools.internal/x")
    policy.check_static("https://metrics.internal:8443/x")
    for url in ("http://127.0.0.1:9002/x", "https://[::1]:9000/x", "http://metrics.internal/x", "https://192.168.0.1/x"):
        with pytest.raises(OutboundRefused):
            policy.check_static(url)
    # a host name's addresses are only known at connection time (see the resolution tests)
    policy.check_static("https://metrics.internal/x")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:99999", "http://x/", "a b", "[::1"])
def test_malformed_allow_list_entries_fail_at_start_up(entry):
    with pytest.raises(ValueError):
        OutboundPolicy((entry,))


def test_settings_read_a_comma_separated_allow_list(monkeypatch):
    from gateway.config import Settings

    monkeypatch.setenv("GATEWAY_OUTBOUND_ALLOW", "127.0.0.1:9000, 10.0.0.0/8")
    s = Settings(_env_file=None)
    assert s.outbound_allow == ["127.0.0.1:9000", "10.0.0.0/8"]
    OutboundPolicy.from_settings(s).check_static("https://10.9.9.9/x")
    monkeypatch.setenv("GATEWAY_OUTBOUND_ALLOW", "10.0.0.0/40")
    with pytest.raises(ValueError):
        Settings(_env_file=None)


def _fake_dns(monkeypatch, table: dict[str, list[str]], calls: list[str] | None = None) -> None:
    """Resolve the names of ``table`` to its addresses (each call, in order); others fail.

    Patches ``socket.getaddrinfo`` (what the resolver pool's threads call)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if _is_literal(host):
            return real(host, port, family, type, proto, flags)
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        out = []
        for addr in table[host]:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (addr, port) if fam == socket.AF_INET else (addr, port, 0, 0)))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _is_literal(host) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
    except (OSError, TypeError):
        return False
    return True


async def test_every_resolved_address_is_checked(monkeypatch):
    _fake_dns(monkeypatch, {"mixed.test": ["8.8.8.8", "10.0.0.7"], "public.test": ["8.8.8.8", "2001:4860:4860::8888"],
                            "mapped.test": ["::ffff:169.254.169.254"]})  # fmt: skip
    assert await check_outbound_url("https://public.test/x", STRICT) == ["8.8.8.8", "2001:4860:4860::8888"]
    for name in ("mixed.test", "mapped.test", "nxdomain.test"):
        with pytest.raises(OutboundRefused):
            await check_outbound_url(f"https://{name}/x", STRICT)
    # a host allow-listed by name may resolve to private addresses
    assert await check_outbound_url("https://mixed.test/x", OutboundPolicy(("mixed.test",))) == ["8.8.8.8", "10.0.0.7"]


class _HttpServer:
    """A minimal HTTP/1.1 server on loopback answering every request with a JSON body."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> _HttpServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            self.requests.append(head + await reader.readexactly(length))
            body = b'{"ok":true}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()


async def test_transport_refuses_loopback_unless_allow_listed():
    async with _HttpServer() as srv:
        async with outbound_client(STRICT, timeout=5) as client:
            with pytest.raises(httpx.ConnectError) as info:
                await client.post(f"http://127.0.0.1:{srv.port}/x", json={})
            assert isinstance(info.value.__cause__, OutboundRefused)
        async with outbound_client(OutboundPolicy((f"127.0.0.1:{srv.port}",)), timeout=5) as client:
            r = await client.post(f"http://127.0.0.1:{srv.port}/x", json={"a": 1})
            assert r.json() == {"ok": True}
    assert srv.connections == 1  # the refused request never connected


async def test_transport_connects_to_the_address_it_checked(monkeypatch):
    """The name is resolved once per connection, checked, and the socket goes to that address:
    the system resolver (which knows nothing of ``rebind.test``) is never asked again."""
    calls: list[str] = []
    async with _HttpServer() as srv:
        _fake_dns(monkeypatch, {"rebind.test": ["127.0.0.1"]}, calls)
        policy = OutboundPolicy((f"rebind.test:{srv.port}",))
        async with httpx.AsyncClient(transport=OutboundTransport(policy), timeout=5) as client:
            r = await client.post(f"http://rebind.test:{srv.port}/x", json={})
            assert r.status_code == 200 and b"Host: rebind.test" in srv.requests[0]
            # the same name answering a private address it is not allowed to use is refused
            _fake_dns(monkeypatch, {"rebind.test": ["10.0.0.9"]}, calls)
            strict = httpx.AsyncClient(transport=OutboundTransport(OutboundPolicy((f"127.0.0.1:{srv.port}",))))
            with pytest.raises(httpx.ConnectError):
                await strict.post(f"https://rebind.test:{srv.port}/x", json={})
            await strict.aclose()
    assert calls == ["rebind.test", "rebind.test"]


async def test_tool_runner_with_the_guarded_client_never_reaches_a_refused_tool(caplog):
    async with _HttpServer() as srv:
        specs = parse_tools([{"name": "peek", "url": f"http://127.0.0.1:{srv.port}/admin"}])
        runner = ToolRunner(specs, client=outbound_client(STRICT))
        out = json.loads(await runner.call(ToolCall("c1", "peek", "{}")))
        assert "unreachable" in out["error"] and srv.connections == 0
        assert "refused by the outbound policy" in caplog.text  # the operator sees why
        allowed = ToolRunner(specs, client=outbound_client(OutboundPolicy((f"127.0.0.1:{srv.port}",))))
        assert json.loads(await allowed.call(ToolCall("c2", "peek", '{"q": 1}'))) == {"ok": True}
        assert srv.requests[0].endswith(b'{"q":1}')


@given(st.text(alphabet="0123456789abcdefx.", min_size=1, max_size=16))
@settings(max_examples=2000, deadline=None)
def test_legacy_ipv4_forms_are_read_exactly_as_inet_aton_reads_them(text):
    """The static check's reading of ``127.1``-style hosts (pure Python) matches the system's
    ``inet_aton`` (which ``getaddrinfo`` uses at connection time)."""
    from gateway.netpolicy import _literal

    text = text.rstrip(".")  # a trailing dot is ignored on purpose (a stricter reading)
    try:
        expected = str(ipaddress.IPv4Address(socket.inet_aton(text)))
    except OSError:
        expected = None
    got = _literal(text)
    assert (None if got is None else str(got)) == expected
