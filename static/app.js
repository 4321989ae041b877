// The voice agent page: mic -> /ws -> jitter buffer -> speaker, with the live transcript.
// Protocol: see streaming_server_advanced.py. No build step: plain ES2020, loaded by index.html.
"use strict";

const KIND_AUDIO = 1, KIND_AGENT_TEXT = 2, KIND_USER_TEXT = 3;
const WIRE_RATE = 24000; // DESIGN.md: 24 kHz PCM16 on the wire; the ready message confirms it
const CHUNK_MS = 20;
const MAX_BUFFERED_BYTES = 64 * 1024; // a stalled socket drops mic chunks instead of queueing them
const RETRY_DELAYS_S = [1, 2, 4, 8, 15, 15, 15, 15];
const BUSY_RETRY_S = 5;

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");

// What a test (or a curious user in the console) can read.
const stats = (window.__stats = {
  connected: false, streaming: false, state: "idle", framesSent: 0, framesReceived: 0,
  playedSamples: 0, nonSilentSamples: 0, underruns: 0, flushes: 0, flushMessages: 0,
  bufferedMs: 0, targetMs: 0, agentText: "", userText: "", heard: [], lastError: null, reconnects: 0,
  // The mic in 24 kHz samples: captured; sent; not sent (no conversation yet, or between two);
  // dropped while the socket stalled.
  micSamples: 0, micSentSamples: 0, micUnsentSamples: 0, micStalledSamples: 0,
});

let ctx = null, playback = null;
let mic = null; // {stream, source, capture, sink}
let ws = null;
let wantRunning = false; // the user pressed Start and not Stop
let retryTimer = null, retryCount = 0;
let frameSize = 960, samplesSent = 0, sendTimes = [], rtts = [];
let lastErrorCode = null;
const decoder = new TextDecoder("utf-8");

// --- status and messages ------------------------------------------------------------------------

function banner(text, kind = "warn") {
  const el = $("banner");
  el.textContent = text;
  el.className = "banner" + (kind === "error" ? " error" : "");
}

function clearBanner() { $("banner").className = "banner hidden"; }

function setState(state) {
  stats.state = state;
  const el = $("state");
  el.textContent = { idle: "idle", connecting: "connecting…", listening: "listening · వింటోంది",
    thinking: "thinking · ఆలోచిస్తోంది", speaking: "speaking · మాట్లాడుతోంది",
    interrupted: "interrupted · ఆగింది" }[state] || state;
  el.className = "pill state-" + state;
}

function setRunningUi(running) {
  $("start").disabled = running || $("voice").options.length === 0;
  $("stop").disabled = !running;
  $("voice").disabled = running;
}

function fillVoices(voices, preferred) {
  const sel = $("voice");
  const current = sel.value || preferred;
  sel.textContent = "";
  for (const v of voices) {
    const opt = document.createElement("option");
    opt.value = v.name;
    opt.textContent = v.name + (v.gender ? ` (${v.gender})` : "");
    sel.appendChild(opt);
  }
  if ([...sel.options].some((o) => o.value === current)) sel.value = current;
  setRunningUi(wantRunning);
}

async function loadHealth() {
  try {
    const r = await fetch("/health", { cache: "no-store" });
    const h = await r.json();
    fillVoices(h.voices, h.default_voice);
    const models = [h.models.s2s, h.models.codec].filter(Boolean).map(basename).join(", ");
    $("server").textContent = `server ${h.version} · ${h.sessions}/${h.max_sessions} conversations` +
      (models ? ` · models: ${models}` : "") + (h.token_required && !token ? " · needs ?token=" : "");
  } catch (e) {
    $("server").textContent = "server unreachable: is streaming_server_advanced.py running?";
  }
}

function basename(p) { return String(p || "").split("/").pop(); }

// --- audio ---------------------------------------------------------------------------------------

async function ensureAudio() {
  if (!ctx) {
    ctx = new AudioContext({ latencyHint: "interactive" });
    await ctx.audioWorklet.addModule("worklets.js");
    playback = new AudioWorkletNode(ctx, "playback", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { inputRate: WIRE_RATE },
    });
    playback.port.onmessage = (e) => onPlaybackStats(e.data);
    playback.connect(ctx.destination);
  }
  if (ctx.state !== "running") await ctx.resume();
}

async function openMic() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const source = ctx.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(ctx, "capture", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: WIRE_RATE, chunkSamples: (WIRE_RATE * CHUNK_MS) / 1000 },
  });
  const sink = ctx.createGain(); // silent: the worklet must be pulled, the mic must not be heard
  sink.gain.value = 0;
  source.connect(capture).connect(sink).connect(ctx.destination);
  capture.port.onmessage = (e) => onCapture(e.data);
  for (const track of stream.getAudioTracks()) {
    track.onended = () => { if (wantRunning) { banner("The microphone was disconnected.", "error"); stop(); } };
  }
  mic = { stream, source, capture, sink };
}

function closeMic() {
  if (!mic) return;
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.source.disconnect();
  mic.capture.disconnect();
  mic.capture.port.postMessage({ type: "active", value: false });
  mic = null;
  meter("mic-level", 0);
}

function micError(e) {
  if (e && (e.name === "NotAllowedError" || e.name === "SecurityError")) {
    return "Microphone access was denied. Allow the microphone for this page (the icon in the address bar) and press Start again.";
  }
  if (e && (e.name === "NotFoundError" || e.name === "OverconstrainedError")) {
    return "No microphone found. Connect one and press Start again.";
  }
  if (!window.isSecureContext) {
    return "The browser only allows the microphone on https:// or http://127.0.0.1 / localhost.";
  }
  return `Could not open the microphone: ${e && e.message ? e.message : e}`;
}

function onCapture(d) {
  if (d.type === "level") { meter("mic-level", d.rms); return; }
  if (d.type !== "pcm") return;
  const n = d.pcm.byteLength / 2;
  stats.micSamples += n;
  // Not after Stop (!mic): the worklet's last chunks, still queued, would follow the "stop" message.
  if (!mic || !ws || ws.readyState !== WebSocket.OPEN || !stats.streaming) { stats.micUnsentSamples += n; return; }
  if (ws.bufferedAmount > MAX_BUFFERED_BYTES) { stats.micStalledSamples += n; return; } // the network stalls: drop, do not pile up
  stats.micSentSamples += n;
  const pcm = new Uint8Array(d.pcm);
  const msg = new Uint8Array(pcm.length + 1);
  msg[0] = KIND_AUDIO;
  msg.set(pcm, 1);
  ws.send(msg.buffer);
  samplesSent += pcm.length / 2;
  while (samplesSent >= (stats.framesSent + 1) * frameSize) sendTimes[stats.framesSent++] = performance.now();
}

function onPlaybackStats(d) {
  if (d.type !== "stats") return;
  stats.playedSamples = d.played;
  stats.nonSilentSamples = d.nonSilent;
  stats.underruns = d.underruns;
  stats.flushes = d.flushes;
  stats.bufferedMs = d.bufferedMs;
  stats.targetMs = d.targetMs;
  meter("agent-level", d.rms);
  $("lat-buffer").textContent = `${Math.round(d.bufferedMs)} / ${Math.round(d.targetMs)} ms` +
    (d.underruns ? ` · ${d.underruns} underruns` : "");
}

function meter(id, rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-5)); // -100 .. 0 dBFS -> 0 .. 100 %, -60 dB floor
  $(id).style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
}

// --- transcript ----------------------------------------------------------------------------------

const turns = { user: null, agent: null };
const newTurn = { user: true, agent: true };

function addPiece(side, text) {
  if (!text) return;
  if (side === "agent") stats.agentText += text; else stats.userText += text;
  let turn = turns[side];
  if (!turn || newTurn[side]) {
    const el = document.createElement("div");
    el.className = "turn " + side;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = side === "agent" ? "agent · ఏజెంట్" : "you · మీరు";
    const body = document.createTextNode("");
    el.append(who, body);
    $("transcript").appendChild(el);
    turn = turns[side] = { el, body };
    newTurn[side] = false;
    text = text.replace(/^\s+/, "");
  }
  turn.body.data += text;
  const box = $("transcript").parentElement;
  box.scrollTop = box.scrollHeight;
}

function onStateChange(state) {
  const before = stats.state;
  setState(state);
  // The agent's text runs ahead of its voice, so its turn opens with its first piece and closes
  // when it stops speaking; the user's turn closes when the agent starts.
  if (state === "speaking") newTurn.user = true;
  if (before === "speaking" && state !== "speaking") newTurn.agent = true;
  if (state === "interrupted" && turns.agent) turns.agent.el.classList.add("interrupted");
}

// --- the connection ------------------------------------------------------------------------------

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function connect() {
  clearTimeout(retryTimer);
  setState("connecting");
  lastErrorCode = null;
  ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { stats.connected = true; };
  ws.onmessage = (e) => (typeof e.data === "string" ? onControl(JSON.parse(e.data)) : onBinary(e.data));
  ws.onclose = (e) => onClose(e);
}

function onControl(m) {
  switch (m.type) {
    case "ready":
      if (m.sample_rate !== WIRE_RATE) {
        banner(`The server speaks ${m.sample_rate} Hz audio; this page expects ${WIRE_RATE} Hz.`, "error");
        wantRunning = false;
        ws.close(1000);
        return;
      }
      frameSize = m.frame_size;
      fillVoices(m.voices, m.default_voice);
      $("lat-model").textContent = "–";
      ws.send(JSON.stringify({ type: "start", voice: $("voice").value, ...(token ? { token } : {}) }));
      break;
    case "started":
      clearBanner();
      retryCount = 0;
      samplesSent = 0; sendTimes = []; rtts = [];
      stats.framesSent = 0; stats.framesReceived = 0;
      stats.streaming = true;
      $("lat-model").textContent = `${m.algorithmic_delay_ms} ms`;
      newTurn.user = newTurn.agent = true;
      break;
    case "state":
      onStateChange(m.state);
      break;
    case "heard": // the request as the agent read it: it replaces the ear's raw characters
      stats.heard.push(m.text);
      if (turns.user) {
        turns.user.body.data = m.text;
        turns.user.el.classList.add("heard");
      }
      newTurn.user = true;
      break;
    case "flush": // barge-in: the agent yields, drop what it had queued
      stats.flushMessages++;
      if (playback) playback.port.postMessage({ type: "flush" });
      break;
    case "stats":
      showServerStats(m);
      break;
    case "stopped":
      stats.streaming = false;
      if (!wantRunning && ws) ws.close(1000, "stopped");
      break;
    case "error":
      lastErrorCode = m.code;
      stats.lastError = m.code;
      if (m.code === "busy") {
        banner(`The server is busy: every conversation slot is in use. Retrying in ${BUSY_RETRY_S} s…`);
      } else if (m.code === "unauthorized") {
        banner("This server needs a token: open the page as /?token=YOUR_TOKEN.", "error");
        wantRunning = false;
      } else if (m.code === "shutdown") {
        banner("The server is shutting down.");
      } else {
        banner(`Server error (${m.code}): ${m.message}`, "error");
      }
      break;
  }
}

function onBinary(data) {
  const kind = new Uint8Array(data, 0, 1)[0];
  if (kind === KIND_AUDIO) {
    const pcm = data.slice(1);
    if (playback) playback.port.postMessage({ type: "pcm", pcm }, [pcm]);
    const i = stats.framesReceived++;
    if (sendTimes[i] !== undefined) {
      rtts.push(performance.now() - sendTimes[i]);
      if (rtts.length > 100) rtts.shift();
      if (i % 10 === 0) $("lat-rtt").textContent = `${Math.round(median(rtts))} ms`;
      delete sendTimes[i];
    }
  } else if (kind === KIND_AGENT_TEXT) {
    addPiece("agent", decoder.decode(new Uint8Array(data, 1)));
  } else if (kind === KIND_USER_TEXT) {
    addPiece("user", decoder.decode(new Uint8Array(data, 1)));
  }
}

function showServerStats(m) {
  const c = m.compute_ms || {}, e = m.e2e_ms || {}, g = m.response_gap_ms || {};
  if (c.p50 !== undefined) $("lat-compute").textContent = `${c.p50.toFixed(1)} / ${c.p95.toFixed(1)} ms`;
  if (e.p95 !== undefined) $("lat-e2e").textContent = `${e.p95.toFixed(1)} ms`;
  if (g.p50 !== undefined) $("lat-gap").textContent = `${Math.round(g.p50)} ms`;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
}

function onClose(e) {
  stats.connected = false;
  stats.streaming = false;
  ws = null;
  if (playback) playback.port.postMessage({ type: "flush" });
  if (!wantRunning) {
    setState("idle");
    setRunningUi(false);
    loadHealth();
    return;
  }
  if (e.code === 1013 || lastErrorCode === "busy") {
    setState("idle");
    retryTimer = setTimeout(connect, BUSY_RETRY_S * 1000);
    return;
  }
  if (retryCount >= RETRY_DELAYS_S.length) {
    banner("Could not reconnect to the server. Press Start to try again.", "error");
    stop();
    return;
  }
  const delay = RETRY_DELAYS_S[retryCount++];
  stats.reconnects++;
  const why = e.reason ? `: ${e.reason}` : e.code === 1006 ? " (network)" : ` (code ${e.code})`;
  banner(`Connection dropped${why}. Reconnecting in ${delay} s…`);
  setState("connecting");
  retryTimer = setTimeout(connect, delay * 1000);
}

// --- buttons -------------------------------------------------------------------------------------

async function start() {
  wantRunning = true;
  retryCount = 0;
  setRunningUi(true);
  clearBanner();
  try {
    await ensureAudio();
  } catch (e) {
    banner(`This browser cannot run the audio engine (AudioWorklet): ${e.message}`, "error");
    wantRunning = false;
    setRunningUi(false);
    return;
  }
  try {
    await openMic();
  } catch (e) {
    banner(micError(e), "error");
    wantRunning = false;
    setRunningUi(false);
    return;
  }
  connect();
}

function stop() {
  wantRunning = false;
  clearTimeout(retryTimer);
  closeMic();
  if (ws && ws.readyState === WebSocket.OPEN && stats.streaming) {
    ws.send(JSON.stringify({ type: "stop" }));
    const sock = ws;
    setTimeout(() => sock.readyState === WebSocket.OPEN && sock.close(1000, "stopped"), 3000);
  } else if (ws) {
    ws.close(1000, "stopped");
  }
  if (playback) playback.port.postMessage({ type: "flush" });
  setState("idle");
  setRunningUi(false);
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
setState("idle");
loadHealth();
