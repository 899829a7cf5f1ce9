"""WebRTC calls: a browser's peer connection as one call session's carrier stream (issue 12).

A call created with ``connectionType: "webrtc"`` gets a one-use offer URL
(``POST /webrtc/{callId}/{token}/offer``, :mod:`gateway.webrtc.offer`). The browser posts its
SDP offer there and gets a complete answer (ICE gathered, no trickle); the call then runs in
a task of its own, tracked by :class:`gateway.webrtc.offer.WebRtcCalls`, through the same
:class:`~gateway.session.CallSession` as any carrier stream:

* :mod:`gateway.webrtc.peer`: the aiortc ``RTCPeerConnection`` of one call (offer → answer,
  codec preference, connect wait);
* :mod:`gateway.webrtc.transport`: the session's :class:`~gateway.session.common.Transport`
  over that connection, speaking the internal frame protocol of
  :mod:`gateway.carriers.webrtc` (the sans-I/O adapter), with the ``events`` data channel;
* :mod:`gateway.webrtc.tracks`: the paced outbound track (20 ms frames at real time, marks
  acknowledged from the frames it emitted, ``clear``) and the inbound decode → resample;
* :mod:`gateway.webrtc.ice`: loopback host candidates for aioice;
* :mod:`gateway.webrtc.state`: the agent state and data channel messages (pure).

aiortc and PyAV are imported only by these modules, and only when a WebRTC call is made (the
offer route imports them on first use): the gateway starts and serves every other call
without them loaded.
"""

__all__: list[str] = []
