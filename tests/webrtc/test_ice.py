"""The ICE settings: GATEWAY_WEBRTC_STUN_URLS / TURN_URLS read and checked, and the gateway's own servers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.webrtc.ice import ice_servers


def test_comma_lists_become_ice_servers_for_the_gateway():
    s = Settings(_env_file=None, webrtc_stun_urls="stun:a.example:3478, stun:b.example", webrtc_turn_urls="turn:t.example:3478",
                 webrtc_turn_username="u", webrtc_turn_credential="pa55-w0rd")  # fmt: skip
    assert s.webrtc_stun_urls == ["stun:a.example:3478", "stun:b.example"]
    stun, turn = ice_servers(s)
    assert stun.urls == ["stun:a.example:3478", "stun:b.example"] and stun.username is None
    assert turn.urls == ["turn:t.example:3478"] and (turn.username, turn.credential) == ("u", "pa55-w0rd")
    assert "pa55-w0rd" not in repr(s)
    assert ice_servers(Settings(_env_file=None)) == []


@pytest.mark.parametrize(("field", "value"), [
    ("webrtc_stun_urls", "turn:t.example"), ("webrtc_stun_urls", "http://x"), ("webrtc_stun_urls", "stun:"),
    ("webrtc_turn_urls", "stun:s.example"), ("webrtc_turn_urls", "t.example:3478"),
])  # fmt: skip
def test_urls_of_the_wrong_scheme_are_refused(field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(_env_file=None, **{field: value})
