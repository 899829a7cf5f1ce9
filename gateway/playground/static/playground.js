// The playground: one WebRTC call to an agent through the gateway's REST API.
//
// Flow: GET /agents (the picker) → POST /calls/create {agentId} or /calls/inline {systemPrompt,
// greeting, …} with connectionType "webrtc" → an RTCPeerConnection with the microphone track and
// an "events" data channel → the SDP offer POSTed to the call's offerUrl (the token in the URL is
// the credential) → the answer. The data channel brings the agent's state, the transcript (with
// each agent turn's latency: end of caller speech → first agent audio sent) and the call's
// events; afterwards the page shows GET /calls/{id} and the recording (fetched with the key into a
// blob URL). The API key lives in the key field and in request headers only: never stored.
// Errors are the API's envelope {"error": {"code", "message", "fields"}}, shown as they come.

const $ = (id) => document.getElementById(id);

const TERMINAL = new Set(["completed", "failed", "expired", "no_answer", "busy", "declined", "voicemail", "canceled"]);
const ICE_GATHER_MS = 5000; // the answer is complete (no trickle): so is our offer, or what we have by then
const REQUEST_MS = 20000; // every request to the gateway
const HANGUP_MS = 3000; // after our hang-up, how long the gateway's "ended" may take
const RECORD_WAIT_MS = 20000; // how long the call's record may take to be final
const METER_MS = 50;
const INTERRUPTED_MS = 800; // how long "interrupted" stays on screen at least
const NO_KEY = "Type an API key first (gateway keys create playground).";
// API field (wire name) → the input that sets it, marked invalid when the API names it.
const FIELD_INPUTS = { systemPrompt: "systemPrompt", greeting: "greeting", voice: "voice", language: "language",
  model: "model", agentId: "agent" };

class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || [];
  }
}

// The call in progress (null between calls). Read-only handles for debugging are on
// window.playground (below).
let call = null;
let muted = false;

function apiUrl(path) {
  return new URL(path, document.baseURI).href; // beside /playground, so a path prefix is kept
}

async function fetchWithin(url, init, ms) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  try {
    return await fetch(url, { ...init, signal: abort.signal, credentials: "omit", cache: "no-store" });
  } catch (e) {
    const why = e.name === "AbortError" ? `no answer within ${ms / 1000} s` : e.message;
    throw new Error(`${init.method || "GET"} ${new URL(url).pathname}: the gateway is unreachable (${why})`);
  } finally {
    clearTimeout(timer);
  }
}

async function errorOf(response, what) {
  let body = null;
  try {
    body = await response.json();
  } catch (e) { /* not JSON: described by its status below */ }
  const err = body && body.error;
  if (err && err.code) return new ApiError(response.status, err.code, err.message, err.fields);
  return new ApiError(response.status, `http_${response.status}`, `${what} answered ${response.status} ${response.statusText}`);
}

async function api(method, path, body) {
  const key = $("apiKey").value.trim();
  if (!key) throw new ApiError(401, "unauthorized", NO_KEY);
  const headers = { Accept: "application/json", "X-API-Key": key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
  const r = await fetchWithin(apiUrl(path), init, REQUEST_MS);
  if (!r.ok) throw await errorOf(r, `${method} /${path}`);
  return r;
}

// -- errors ---------------------------------------------------------------------------------

function describe(err) {
  if (err instanceof ApiError) {
    return [`${err.code} (${err.status}): ${err.message}`, ...err.fields.map((f) => `• ${f.field}: ${f.message}`)].join("\n");
  }
  if (err && err.name === "NotAllowedError") return "Microphone permission denied: allow the microphone for this page and call again.";
  if (err && err.name === "NotFoundError") return "No microphone found.";
  return String((err && err.message) || err);
}

function showError(err) {
  const el = $("error");
  el.textContent = describe(err);
  el.hidden = false;
  for (const f of (err instanceof ApiError ? err.fields : [])) {
    const input = $(FIELD_INPUTS[f.field] || "");
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// -- agents ---------------------------------------------------------------------------------

async function loadAgents() {
  clearError();
  try {
    const { data } = await (await api("GET", "agents")).json();
    const select = $("agent");
    const chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const a of data) select.add(new Option(`${a.name} (${a.model}, ${a.voice})`, a.id));
    select.value = data.some((a) => a.id === chosen) ? chosen : "";
    select.dataset.loaded = String(data.length);
    onAgentChosen();
  } catch (err) {
    showError(err);
  }
}

function onAgentChosen() {
  $("inline").disabled = $("agent").value !== "";
}

function callRequest() {
  const agentId = $("agent").value;
  if (agentId) return ["calls/create", { agentId, connectionType: "webrtc" }];
  const body = {
    connectionType: "webrtc",
    systemPrompt: $("systemPrompt").value,
    greeting: $("greeting").value,
    voice: $("voice").value.trim(),
    language: $("language").value.trim(),
    interruptible: $("interruptible").checked,
  };
  const model = $("model").value.trim();
  if (model) body.model = model;
  return ["calls/inline", body];
}

// -- audio levels ---------------------------------------------------------------------------

function analyser(ctx, stream) {
  const node = ctx.createAnalyser();
  node.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(node);
  return node;
}

function level(node) {
  const buf = new Float32Array(node.fftSize);
  node.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const x of buf) sum += x * x;
  const db = 10 * Math.log10(sum / buf.length + 1e-12);
  return Math.min(1, Math.max(0, (db + 60) / 60)); // −60 dBFS → 0, 0 dBFS → 1
}

function startMeters(c) {
  c.meters = setInterval(() => {
    $("micLevel").value = c.micNode && !muted ? level(c.micNode) : 0;
    $("agentLevel").value = c.agentNode ? level(c.agentNode) : 0;
  }, METER_MS);
}

// -- the call -------------------------------------------------------------------------------

// The gateway sends "interrupted" and then at once "listening": "interrupted" stays on screen a
// moment (unless the call moves on first), so a barge-in is seen.
let stateHold = null;

function setState(state) {
  clearTimeout(stateHold);
  const el = $("state");
  const show = (s) => {
    el.textContent = s;
    el.dataset.state = s;
  };
  if (el.dataset.state === "interrupted" && state === "listening") stateHold = setTimeout(() => show(state), INTERRUPTED_MS);
  else show(state);
}

function setMuted(value) {
  muted = value;
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute mic" : "Mute mic";
  if (call && call.mic) for (const t of call.mic.getAudioTracks()) t.enabled = !muted;
}

function iceGathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    const timer = setTimeout(resolve, ms); // go with the candidates gathered so far
    pc.addEventListener("icegatheringstatechange", done);
  });
}

function resetView() {
  clearError();
  $("transcript").replaceChildren();
  $("events").replaceChildren();
  $("record").replaceChildren();
  delete $("record").dataset.status;
  $("recording").hidden = true;
  $("recording").removeAttribute("src");
  $("callId").textContent = "–";
  setState("connecting");
}

async function startCall() {
  if (call) return;
  resetView();
  $("call").disabled = true;
  const c = { id: null, pc: null, dc: null, mic: null, remote: null, ended: false, finishing: null };
  call = c;
  try {
    if (!window.isSecureContext) throw new Error("The microphone needs a secure page: open the playground over https or on localhost.");
    const [path, body] = callRequest();
    if (!$("apiKey").value.trim()) throw new ApiError(401, "unauthorized", NO_KEY); // before the mic
    c.ctx = new AudioContext();
    const processing = $("processing").checked; // the browser's echo cancellation, noise suppression, gain
    const audio = { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing };
    c.mic = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    for (const t of c.mic.getAudioTracks()) t.enabled = !muted;
    c.micNode = analyser(c.ctx, c.mic);
    startMeters(c);
    const created = await (await api("POST", path, body)).json();
    c.id = created.callId;
    $("callId").textContent = c.id;
    if (!created.offerUrl) throw new Error(`The gateway gave call ${c.id} no offer URL: it does not serve WebRTC calls.`);
    const offerUrl = new URL(created.offerUrl, document.baseURI);
    if (offerUrl.origin !== location.origin) {
      throw new Error(`The call's offer URL is on ${offerUrl.origin}, not this page's origin ${location.origin}: ` +
        "open the playground at the gateway's public URL (GATEWAY_PUBLIC_URL)/playground.");
    }
    await connect(c, created, offerUrl);
    $("hangup").disabled = false;
  } catch (err) {
    showError(err);
    await finish(c, null);
  }
}

async function connect(c, created, offerUrl) {
  const pc = (c.pc = new RTCPeerConnection({ iceServers: created.iceServers || [] }));
  c.dc = pc.createDataChannel("events", { ordered: true });
  c.dc.onmessage = (m) => onMessage(c, m.data);
  c.dc.onclose = () => c.ended || finish(c, null);
  for (const t of c.mic.getAudioTracks()) pc.addTrack(t, c.mic);
  pc.ontrack = (e) => {
    // the smallest receive delay the network allows (Chromium's jitter buffer otherwise settles
    // near 100 ms even on loopback): what the agent says, and its stop on a barge-in, come sooner
    if ("jitterBufferTarget" in e.receiver) e.receiver.jitterBufferTarget = 0;
    c.remote = e.streams[0] || new MediaStream([e.track]);
    $("remoteAudio").srcObject = c.remote; // Chromium feeds WebAudio a remote stream only while an element plays it
    c.agentNode = analyser(c.ctx, c.remote);
  };
  pc.onconnectionstatechange = () => {
    $("connection").textContent = pc.connectionState;
    if (pc.connectionState === "failed" && !c.ended) {
      showError(new Error("The WebRTC connection failed (ICE or DTLS). Across networks the gateway needs " +
        "STUN/TURN servers (GATEWAY_WEBRTC_STUN_URLS, GATEWAY_WEBRTC_TURN_URLS)."));
      finish(c, null);
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, ICE_GATHER_MS);
  const init = { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }) };
  const r = await fetchWithin(offerUrl.href, init, REQUEST_MS);
  if (!r.ok) throw await errorOf(r, "the offer");
  const answer = await r.json();
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  c.connected = true;
}

function onMessage(c, text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    logEvent("unreadable message", null, { text: String(text).slice(0, 200) });
    return;
  }
  if (m.type === "state") setState(m.state);
  else if (m.type === "transcript") addTurn(m);
  else if (m.type === "event") logEvent(m.kind, m.atMs, m.data);
  else if (m.type === "ended") {
    logEvent("ended", null, { status: m.status, endReason: m.endReason });
    finish(c, m);
  }
}

// One list item per transcript turn: a message with the index of a turn shown already replaces
// it (a barge-in cut it, its latency became known, its text was corrected); interim text (final
// false, optional) fills the role's pending item until its final message.
function addTurn(m) {
  const list = $("transcript");
  let li = (m.index != null && list.querySelector(`li[data-index="${Number(m.index)}"]`)) ||
    list.querySelector(`li.interim[data-role="${m.role === "agent" ? "agent" : "user"}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.role = m.role === "agent" ? "agent" : "user";
    list.append(li);
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.text;
  li.replaceChildren(text);
  li.classList.toggle("interim", !m.final);
  if (m.index != null) li.dataset.index = String(Number(m.index));
  if (!m.final) return;
  const notes = [];
  if (m.latencyMs != null) notes.push(`${m.latencyMs} ms`);
  if (m.interrupted) notes.push(m.heardMs != null ? `interrupted, heard ${m.heardMs} ms` : "interrupted");
  if (notes.length) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = notes.join(" · ");
    li.append(badge);
  }
  if (m.latencyMs != null) li.dataset.latencyMs = String(m.latencyMs);
}

function logEvent(kind, atMs, data) {
  const li = document.createElement("li");
  li.textContent = `${atMs != null ? `${atMs} ms ` : ""}${kind}${data && Object.keys(data).length ? " " + JSON.stringify(data) : ""}`;
  $("events").append(li);
}

async function hangUp() {
  const c = call;
  if (!c || c.ended) return;
  $("hangup").disabled = true;
  if (c.dc && c.dc.readyState === "open") c.dc.send(JSON.stringify({ type: "hangup" }));
  // the gateway answers with "ended" (→ finish); if it does not, closing the connection hangs up too
  setTimeout(() => finish(c, null), HANGUP_MS);
}

// End the call's media on this side (once), then show its record and recording.
function finish(c, ended) {
  if (c.finishing) return c.finishing;
  c.ended = true;
  c.finishing = (async () => {
    clearInterval(c.meters);
    if (c.mic) for (const t of c.mic.getTracks()) t.stop();
    if (c.pc) c.pc.close();
    if (c.ctx) c.ctx.close();
    $("micLevel").value = 0;
    $("agentLevel").value = 0;
    $("connection").textContent = "not connected";
    setState(ended ? "ended" : c.id ? "ended" : "idle");
    $("hangup").disabled = true;
    if (c.id) await showRecord(c.id, { wait: !!c.connected }); // never connected: not final for a while
    if (call === c) call = null;
    $("call").disabled = false;
  })();
  return c.finishing;
}

// -- after the call -------------------------------------------------------------------------

async function finalRecord(id, wait) {
  const deadline = performance.now() + (wait ? RECORD_WAIT_MS : 0);
  for (;;) {
    const rec = await (await api("GET", `calls/${encodeURIComponent(id)}`)).json();
    if (TERMINAL.has(rec.status) || performance.now() > deadline) return rec;
    await new Promise((r) => setTimeout(r, 250));
  }
}

function term(dl, name, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  dl.append(dt, dd);
  return dd;
}

async function showRecord(id, { wait }) {
  const view = $("record");
  try {
    const rec = await finalRecord(id, wait);
    const dl = document.createElement("dl");
    term(dl, "Call", rec.id);
    term(dl, "Status", rec.status).id = "recordStatus";
    term(dl, "End reason", rec.endReason || "–");
    term(dl, "Duration", rec.durationMs != null ? `${(rec.durationMs / 1000).toFixed(1)} s` : "–");
    term(dl, "Turns", String(rec.transcript.length));
    const lat = rec.transcript.filter((t) => t.latencyMs != null).map((t) => t.latencyMs);
    term(dl, "Turn latency", lat.length ? lat.map((ms) => `${ms} ms`).join(", ") : "–");
    const json = document.createElement("a");
    json.href = URL.createObjectURL(new Blob([JSON.stringify(rec, null, 2)], { type: "application/json" }));
    json.download = `${rec.id}.json`;
    json.textContent = "Download the record (JSON)";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `GET /calls/${rec.id}`;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(rec, null, 2);
    details.append(summary, pre);
    view.replaceChildren(dl, json, details);
    await showRecording(rec, dl);
    view.dataset.status = rec.status; // the view is complete
  } catch (err) {
    showError(err);
  }
}

async function showRecording(rec, dl) {
  const r = rec.recording;
  if (!r || r.status !== "completed") {
    term(dl, "Recording", r ? `${r.status}${r.error ? `: ${r.error}` : ""}` : "off");
    return;
  }
  const blob = await (await api("GET", `calls/${encodeURIComponent(rec.id)}/recording`)).blob();
  const audio = $("recording");
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
  const link = document.createElement("a");
  link.href = audio.src;
  link.download = `${rec.id}.wav`;
  link.textContent = `two-channel WAV, ${(blob.size / 1024).toFixed(0)} KiB (caller left, agent right)`;
  term(dl, "Recording", "").append(link);
}

// -- wiring ---------------------------------------------------------------------------------

// Read-only handles for debugging from the console (and for the browser test).
window.playground = Object.freeze({
  get callId() { return call ? call.id : null; },
  get peerConnection() { return call ? call.pc : null; },
  get localStream() { return call ? call.mic : null; },
  get remoteStream() { return call ? call.remote : null; },
});

function wire() {
  $("apiKey").addEventListener("change", () => $("apiKey").value.trim() && loadAgents());
  $("refreshAgents").addEventListener("click", loadAgents);
  $("agent").addEventListener("change", onAgentChosen);
  $("call").addEventListener("click", startCall);
  $("hangup").addEventListener("click", hangUp);
  $("mute").addEventListener("click", () => setMuted(!muted));
  window.addEventListener("pagehide", () => call && finish(call, null));
  setState("idle");
}

wire();
