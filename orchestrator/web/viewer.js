// LiveMicro viewer: WebRTC video from livemicrod, live microscope state and
// analysis, and the measured glass-to-glass latency.  Plain JS, no build.
//
// URL: /view/{session id}#token={session token}.  The token stays in the
// fragment (never sent in a request); the page sends it as the first
// WebSocket message.  Protocol on /ws/{session id} (JSON):
//   → {type:"hello", token}            ← {type:"welcome", session, online, state, features}
//   ← {type:"offer", sdp}              → {type:"answer", sdp}
//   ↔ {type:"ice", candidate, sdpMLineIndex}
//   ← {type:"frame", rtp, capture_unix_us}   capture time of each RTP frame
//   ← {type:"state"|"features"|"online"|"offline", data}
//   → {type:"ping", t}                 ← {type:"pong", t, server_time_us}
//   → {type:"stats", data}             what this page measured, every second
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const sessionId = location.pathname.split('/').filter(Boolean).pop();
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  const video = $('video');

  const state = {
    ws: null, pc: null, framesDecoded: 0, shown: [], latencies: [],
    captureByRtp: new Map(), clockOffsetMs: 0, iceState: 'new', retry: 0,
  };
  window.livemicro = state;  // for tests and the curious

  function setConn(text, cls) {
    const el = $('conn');
    el.textContent = text;
    el.className = 'badge ' + cls;
  }
  const fmt = (v, digits = 1) => (typeof v === 'number' && isFinite(v) ? v.toFixed(digits) : '–');
  function percentile(values, q) {
    if (!values.length) return NaN;
    const s = [...values].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  }

  function showState(s) {
    if (!s || !s.stage) return;
    $('pos').textContent = `x ${fmt(s.stage.x_um / 1000, 3)} mm, y ${fmt(s.stage.y_um / 1000, 3)} mm`;
    $('focus').textContent = `z ${fmt(s.stage.z_um, 1)} µm`;
    $('objective').textContent = `${s.objective}x (${fmt(s.um_per_px, 3)} µm/px)`;
    $('moving').textContent = s.moving ? 'moving' : 'still';
  }
  // The analysis summary as it comes (the element documents its fields).
  function showFeatures(f) {
    if (!f) return;
    const dl = $('analysis');
    dl.replaceChildren();
    const skip = new Set(['timestamp', 'stream-time', 'running-time', 'duration']);
    for (const [k, v] of Object.entries(f)) {
      if (skip.has(k) || (typeof v === 'object' && v !== null)) continue;
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = k.replace(/_/g, ' ');
      dd.textContent = typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v);
      dl.append(dt, dd);
    }
  }

  function send(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
  }

  async function onOffer(sdp) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    pc.ontrack = (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    pc.onicecandidate = (e) => {
      if (e.candidate) send({ type: 'ice', candidate: e.candidate.candidate, sdpMLineIndex: e.candidate.sdpMLineIndex });
    };
    pc.oniceconnectionstatechange = () => {
      state.iceState = pc.iceConnectionState;
      $('ice').textContent = state.iceState;
      if (state.iceState === 'connected' || state.iceState === 'completed') { setConn('live', 'badge-ok'); state.retry = 0; }
      if (state.iceState === 'failed') reconnect('ICE failed');
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    // Candidates that came before the offer was applied.
    for (const c of state.pendingIce || []) pc.addIceCandidate(c).catch(() => {});
    state.pendingIce = [];
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    send({ type: 'answer', sdp: answer.sdp });
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    switch (m.type) {
      case 'welcome':
        $('who').textContent = `${m.session.user} · ${m.session.role} · microscope ${m.session.microscope}`;
        $('offline').classList.toggle('hidden', m.online);
        showState(m.state);
        showFeatures(m.features);
        setConn('negotiating', 'badge-wait');
        break;
      case 'offer':
        onOffer(m.sdp).catch((e) => reconnect('negotiation failed: ' + e));
        break;
      case 'ice': {
        const c = { candidate: m.candidate, sdpMLineIndex: m.sdpMLineIndex };
        if (state.pc && state.pc.remoteDescription) state.pc.addIceCandidate(c).catch(() => {});
        else (state.pendingIce = state.pendingIce || []).push(c);
        break;
      }
      case 'frame':
        state.captureByRtp.set(m.rtp >>> 0, m.capture_unix_us);
        if (state.captureByRtp.size > 600) state.captureByRtp.delete(state.captureByRtp.keys().next().value);
        break;
      case 'state': showState(m.data); break;
      case 'features': showFeatures(m.data); break;
      case 'offline': $('offline').classList.remove('hidden'); break;
      case 'online': $('offline').classList.add('hidden'); break;
      case 'pong': {
        const now = Date.now();
        const rtt = now - m.t;
        state.clockOffsetMs = m.server_time_us / 1000 - (m.t + rtt / 2);
        break;
      }
      case 'error': setConn('error: ' + m.error, 'badge-bad'); break;
    }
  }

  // Each frame shown: its RTP timestamp gives its capture time.
  function onVideoFrame(now, meta) {
    state.framesDecoded = meta.presentedFrames || state.framesDecoded + 1;
    state.shown.push(performance.now());
    if (meta.rtpTimestamp !== undefined) {
      const capture = state.captureByRtp.get(meta.rtpTimestamp >>> 0);
      if (capture !== undefined) {
        const shownAt = performance.timeOrigin + (meta.presentationTime || now) + state.clockOffsetMs;
        const latency = shownAt - capture / 1000;
        if (latency > -50 && latency < 10000) state.latencies.push(latency);
        if (state.latencies.length > 300) state.latencies.shift();
      }
    }
    video.requestVideoFrameCallback(onVideoFrame);
  }

  function report() {
    const t = performance.now();
    state.shown = state.shown.filter((x) => t - x < 1000);
    const recent = state.latencies.slice(-60);
    const p50 = percentile(recent, 0.5), p95 = percentile(recent, 0.95);
    $('fps').textContent = `${state.shown.length} fps`;
    $('latency').textContent = isFinite(p50) ? `latency ${fmt(p50, 0)} ms` : 'latency –';
    $('latq').textContent = isFinite(p50) ? `${fmt(p50, 0)} / ${fmt(p95, 0)} ms` : '–';
    $('decoded').textContent = String(state.framesDecoded);
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    send({ type: 'stats', data: {
      frames_decoded: state.framesDecoded,
      frames_dropped: q ? q.droppedVideoFrames : null,
      fps: state.shown.length,
      latency_ms_p50: isFinite(p50) ? p50 : null,
      latency_ms_p95: isFinite(p95) ? p95 : null,
      latency_samples: state.latencies.length,
      latencies_ms: state.latencies,
      ice_state: state.iceState,
      user_agent: navigator.userAgent,
    } });
    send({ type: 'ping', t: Date.now() });
  }

  let reconnectTimer = null;
  function reconnect(why) {
    setConn('reconnecting', 'badge-bad');
    console.warn('LiveMicro: reconnecting:', why);
    if (reconnectTimer) return;
    const delay = Math.min(5000, 500 * 2 ** state.retry++);
    reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, delay);
  }

  function connect() {
    if (state.pc) { state.pc.close(); state.pc = null; }
    state.pendingIce = [];
    if (state.ws) { state.ws.onclose = null; state.ws.close(); }
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${sessionId}`);
    state.ws = ws;
    ws.onopen = () => { send({ type: 'hello', token }); send({ type: 'ping', t: Date.now() }); };
    ws.onmessage = onMessage;
    ws.onclose = (e) => {
      if (e.code === 4401 || e.code === 4403) { setConn(e.reason || 'not allowed', 'badge-bad'); return; }
      reconnect('socket closed');
    };
    // No video within 10 s: start over (ICE can fail on the first try).
    setTimeout(() => { if (ws === state.ws && state.framesDecoded === 0) reconnect('no video'); }, 10000);
  }

  if (!token) {
    setConn('no token in the link', 'badge-bad');
    return;
  }
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onVideoFrame);
  setInterval(report, 1000);
  connect();
})();
