// LiveMicro viewer: WebRTC video from livemicrod, live microscope state and
// analysis, the measured glass-to-glass latency, and collaborative control
// (lease, moves, focus, objectives, autofocus, pointers, annotations, stills).
// Plain JS, no build step.
//
// URL: /view/{session id}#token={session token}.  The token stays in the
// fragment (never sent in a request); the page sends it as the first
// WebSocket message and as a Bearer token to the API.  With ?whep=1
// (/view/{id}?whep=1#token=…) the video comes through WHEP instead: the page
// offers, POST /whep/{session id} answers (every candidate in it), DELETE on
// its Location ends it; the WebSocket then carries events only (hello with
// webrtc: false) and no per-frame capture times, so no latency figure.
// Protocol on /ws/{session id} (JSON):
//   → {type:"hello", token, nuclei: true}  ← {type:"welcome", session, online, state, features, control, permissions, slide_map}
//   ← {type:"offer", sdp}              → {type:"answer", sdp}
//   ↔ {type:"ice", candidate, sdpMLineIndex}
//   ← {type:"frame", rtp, capture_unix_us, x_um, y_um, um_per_px, width, height}
//   ← {type:"state"|"features"|"nuclei"|"control"|"presence"|"command"|"pointer"|
//        "annotation"|"annotation_deleted"|"online"|"offline", data}
//   → {type:"pointer", x_um, y_um}     → {type:"stats", data}   ↔ ping/pong
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const sessionId = location.pathname.split('/').filter(Boolean).pop();
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
  const useWhep = new URLSearchParams(location.search).get('whep') === '1';
  const video = $('video');
  const stageEl = $('stage');
  const canvas = $('overlay');

  const state = {
    ws: null, pc: null, framesDecoded: 0, shown: [], shownMinusCapture: [],
    frameByRtp: new Map(), shownByRtp: new Map(), clockOffsetMs: 0, bestRttMs: Infinity, clockPingsLeft: 0, iceState: 'new', retry: 0,
    session: null, microscope: null, scope: null, control: null, lease: null,
    shownFrame: null, pointers: new Map(), annotations: new Map(), whep: useWhep, whepResource: null,
    tool: 'move', draft: [], lastNotice: '', commands: [], fatal: '',
    // In an edge cloud: the live nodes (this one first, then its site's),
    // where the page goes on when this node fails.
    nodes: [], failingOver: false,
    // What this viewer's role may do (the welcome's permissions): the page
    // offers nothing else, so it fires no request that would be refused.
    perms: { control: false, stop: false, analysis: false, pointers: false, annotations: false },
    features: null, featuresAt: 0, releasing: false,
    // The latest analysis' nuclei in slide µm (the "nuclei" event), and the
    // layers this viewer chose to draw from them.
    nuclei: null, nucleiAt: 0,
    // The slide map: geometry, regions masked in this viewer's copy, the path
    // driven (GET …/overview) and its pixels (…/overview.png, masked on the
    // server for this viewer).
    map: null, mapImage: null, mapFetchAt: 0, mapView: null,
    layers: { outlines: localStorage.getItem('livemicro.outlines') !== '0', heatmap: localStorage.getItem('livemicro.heatmap') === '1' },
  };
  window.livemicro = state;  // for tests and the curious

  // ---------- small helpers
  function setConn(text, cls) {
    const el = $('conn');
    el.textContent = text;
    el.className = 'badge ' + cls;
  }
  // The page's clock for latencies: the one video frames' presentation
  // times are on (performance.timeOrigin + performance.now()), which can be
  // tens of ms away from Date.now(); whole ms, as the ping's "t" is.
  // Pings in a row on connecting: a loaded machine delays some of them; the
  // one with the shortest round trip sets the clock offset.
  const kClockPings = 8;
  const clockMs = () => Math.round(performance.timeOrigin + performance.now());
  const fmt = (v, digits = 1) => (typeof v === 'number' && isFinite(v) ? v.toFixed(digits) : '–');
  function percentile(values, q) {
    if (!values.length) return NaN;
    const s = [...values].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  }
  function notice(text, ok = false) {
    state.lastNotice = text;
    const el = $('notice');
    el.textContent = text;
    el.className = 'notice' + (ok ? ' ok' : '');
  }
  function send(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
  }
  // Why a request was refused, in words a pathologist reads.
  function why(status, data, what) {
    const detail = (data && data.error) || '';
    switch (status) {
      case 401: return `${what}: this link is no longer valid (${detail})`;
      case 403: return `${what}: your role may not do this (${detail})`;
      case 409: return `${what}: you do not hold control any more — your lease lapsed or was taken over; request control again`;
      case 422: return `${what} refused: ${detail}`;
      case 429: return `${what}: too many commands at once — slow down a little`;
      case 503: return `${what}: the microscope is not available just now (${detail})`;
      default: return `${what} failed (${status}): ${detail}`;
    }
  }
  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const type = res.headers.get('Content-Type') || '';
    const data = type.includes('json') ? await res.json().catch(() => ({})) : await res.blob();
    return { status: res.status, data };
  }

  // ---------- microscope state, analysis, control, presence
  function showState(s) {
    if (!s || !s.stage) return;
    state.scope = s;
    $('pos').textContent = `x ${fmt(s.stage.x_um / 1000, 3)} mm, y ${fmt(s.stage.y_um / 1000, 3)} mm`;
    $('focus').textContent = `z ${fmt(s.stage.z_um, 1)} µm`;
    $('objective').textContent = `${s.objective}x (${fmt(s.um_per_px, 3)} µm/px)`;
    $('moving').textContent = s.moving ? 'moving' : 'still';
    const box = $('objectives');
    const mags = s.objectives || [];
    if (box.dataset.mags !== mags.join(',')) {
      box.dataset.mags = mags.join(',');
      box.replaceChildren(...mags.map((m) => {
        const b = document.createElement('button');
        b.textContent = `${m}x`;
        b.dataset.mag = m;
        b.title = `objective ${m}x`;
        b.onclick = () => command({ objective: m });
        return b;
      }));
    }
    for (const b of box.children) b.classList.toggle('active', Number(b.dataset.mag) === s.objective);
  }
  // The analysis panel leads with what a pathologist reads; the rest folds
  // away.  Each figure has its unit and a tooltip saying what it is.
  const qualityWords = {
    ok: 'good', blank: 'blank field', no_tissue: 'no tissue in view', low_resolution: 'objective too weak to count nuclei',
    wrong_stain: 'not an H&E stain', out_of_focus: 'out of focus',
  };
  const lead = [
    ['nuclei_count', 'nuclei', (v) => `${v}`, 'nuclei segmented in the analysed field'],
    ['nuclei_per_mm2', 'density', (v) => `${Math.round(v).toLocaleString('en')} /mm²`, 'nuclei per mm² of tissue in the analysed field'],
    ['pleomorphism', 'pleomorphism', (v) => (v ? `${v} of 3` : 'not scored'),
      'nuclear pleomorphism score 1–3 from size, shape and chromatin variation (not scored under 20 nuclei)'],
    ['grade_cue', 'grade cue', (v) => `${v}`, 'an image-derived cue from pleomorphism and mitotic candidates — not a diagnosis'],
    ['quality', 'quality', (v) => qualityWords[v] || v, 'whether the field can be measured: focus, tissue, stain, resolution'],
  ];
  const units = {
    tissue_fraction: ['', 'share of the field covered by tissue'], tissue_area_mm2: ['mm²', 'tissue area in the field'],
    mean_area_um2: ['µm²', 'mean nuclear area'], cv_area: ['', 'coefficient of variation of nuclear area'],
    mean_circularity: ['', 'mean nuclear circularity (1: a disc)'], cv_h_od: ['', 'variation of nuclear hematoxylin density (chromatin)'],
    size_ratio: ['', 'nuclear size against the reference'], mitotic_candidates: ['', 'mitotic-figure candidates in the field'],
    mitotic_candidates_per_mm2: ['/mm²', 'mitotic-figure candidates per mm² of tissue'], he_ratio: ['', 'hematoxylin / eosin density'],
    focus: ['', 'focus measure'], analysis_ms: ['ms', 'time the analysis of one frame took'], um_per_px: ['µm/px', 'scale of the analysed frame'],
  };
  function row(dl, label, value, tip) {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = label;
    dd.textContent = value;
    dt.title = dd.title = tip;
    dl.append(dt, dd);
    return dd;
  }
  function showFeatures(f) {
    if (!f) return;
    state.features = f;
    state.featuresAt = performance.now();
    const dl = $('analysis-lead');
    dl.replaceChildren();
    for (const [key, label, show, tip] of lead) {
      const v = f[key];
      const dd = row(dl, label, v === undefined || v === null ? '–' : show(v), tip);
      dd.dataset.key = key;
    }
    $('grade-note').textContent = f.grade_cue_note || 'Image-derived measurements to help the reading — not a diagnosis.';
    const more = $('analysis');
    more.replaceChildren();
    const skip = new Set(['timestamp', 'stream-time', 'running-time', 'duration', 'grade_cue_note', ...lead.map((l) => l[0])]);
    for (const [k, v] of Object.entries(f)) {
      if (skip.has(k) || (typeof v === 'object' && v !== null)) continue;
      const [unit, tip] = units[k] || ['', k.replace(/_/g, ' ')];
      const text = typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v);
      row(more, k.replace(/_/g, ' '), unit ? `${text} ${unit}` : text, tip);
    }
    showAnalysisState();
  }
  // Whether the numbers (and the outlines) describe the field on screen:
  // "updating" after a move, an objective change, or when they are old.
  function analysisValid() {
    const f = state.features, s = state.scope;
    if (!f || !s) return false;
    if (performance.now() - state.featuresAt > 10000) return false;
    if (s.moving) return false;
    if (f.um_per_px && s.um_per_px && Math.abs(f.um_per_px / s.um_per_px - 1) > 0.02) return false;
    const n = state.nuclei;
    if (n && s.stage && Math.hypot(n.x_um - s.stage.x_um, n.y_um - s.stage.y_um) > 2) return false;
    return true;
  }
  function showAnalysisState() {
    const el = $('analysis-state');
    const ok = analysisValid();
    el.textContent = !state.features ? 'waiting' : ok ? 'current' : 'updating';
    el.className = 'badge ' + (ok ? 'badge-ok' : 'badge-wait');
    $('analysis-panel').classList.toggle('stale', !ok);
  }
  const drives = () => !!(state.lease && state.control && state.control.controller &&
    state.control.controller.session === sessionId);
  function showControl(c) {
    state.control = c;
    const ctl = c && c.controller;
    $('driver').textContent = ctl ? `${ctl.user} (${ctl.role}) drives` + (ctl.session === sessionId ? ' — you' : '')
      : 'nobody drives';
    $('queue').replaceChildren(...(c ? c.queue : []).map((q) => {
      const li = document.createElement('li');
      li.textContent = `${q.user} (${q.role})` + (q.session === sessionId ? ' — you' : '');
      return li;
    }));
    if (state.perms.control && ctl && ctl.session === sessionId && !state.lease) requestControl(true);  // handed over to us
    if (!ctl || ctl.session !== sessionId) {
      // A lease we held is gone without our release: say why.
      if (state.lease && !state.releasing) {
        notice(ctl ? `control passed to ${ctl.user}: your lease lapsed after a while without a command, or the owner took it back`
          : 'you no longer drive: your lease lapsed after a while without a command, or the owner took it back — request control again');
      }
      state.lease = null;
    }
    enableControls();
  }
  // What is offered follows the role; what is enabled follows the lease.
  function enableControls() {
    const mine = drives(), p = state.perms, off = !!state.fatal;
    for (const id of ['focus-down', 'focus-up', 'autofocus']) $(id).disabled = off || !mine;
    for (const b of $('objectives').children) b.disabled = off || !mine;
    $('stop').disabled = off || !(mine || p.stop);
    const c = state.control;
    $('request').disabled = off || mine;
    $('release').disabled = off || (!mine && !(c && c.queue.some((q) => q.session === sessionId)));
    $('still').disabled = off;
    document.querySelectorAll('input[name=tool]').forEach((r) => { r.disabled = off; });
  }
  function applyPermissions(p) {
    state.perms = { ...state.perms, ...(p || {}) };
    const show = (cls, on) => document.querySelectorAll('.' + cls).forEach((el) => el.classList.toggle('hidden', !on));
    show('drive-only', state.perms.control);
    show('stop-only', state.perms.control || state.perms.stop);
    show('pointer-only', state.perms.pointers);
    show('annotate-only', state.perms.annotations);
    show('analysis-only', state.perms.analysis);
    // The first tool this role has.
    const offered = [...document.querySelectorAll('input[name=tool]')].filter((r) => !r.closest('label').classList.contains('hidden'));
    if (!offered.some((r) => r.value === state.tool)) {
      state.tool = offered.length ? offered[0].value : '';
      offered.forEach((r) => { r.checked = r.value === state.tool; });
    } else {
      offered.forEach((r) => { r.checked = r.value === state.tool; });
    }
    $('tools').classList.toggle('hidden', !offered.length);
    stageEl.setAttribute('aria-label', 'live view' + (state.perms.control
      ? ': click to centre, drag to move, arrow keys to jog, wheel or +/- to focus (while you drive)' : ''));
    showHint();
    enableControls();
  }
  // One line under the video: what the chosen tool does.
  function showHint() {
    const t = state.tool, n = state.draft.length;
    const text = state.fatal ? ''
      : t === 'move' ? (drives() ? 'click to centre there · drag to move the slide · arrow keys jog · wheel or +/− focus · Esc stops'
        : 'you watch: request control to drive the microscope')
        : t === 'pointer' ? 'click to show everyone a point for 15 s'
          : t === 'arrow' ? 'drag from the tail to the tip of the arrow'
            : t === 'region' ? (n === 0 ? 'region: click the first corner'
              : n < 3 ? `region: ${n} corner${n > 1 ? 's' : ''} — click the next one (at least 3), Esc cancels`
                : `region: ${n} corners — click another, or double-click to close it; Esc cancels`)
              : '';
    $('hint').textContent = text;
  }
  function showPresence(list) {
    $('presence').replaceChildren(...(list || []).map((p) => {
      const li = document.createElement('li');
      li.textContent = `${p.user} (${p.role})` + (p.session === sessionId ? ' — you' : '');
      return li;
    }));
  }

  // ---------- control and commands
  async function requestControl(quiet) {
    if (!state.perms.control || state.fatal) return;
    const r = await api('POST', `/api/v1/microscopes/${state.microscope}/control`, { action: 'request' });
    if (r.status === 200) {
      state.lease = r.data.lease;
      if (!quiet) notice(`you drive (lease epoch ${r.data.epoch}); it lapses after a while without a command`, true);
    } else if (r.status === 202) {
      notice(`waiting for control: position ${r.data.queue_position} in the queue`, true);
    } else {
      notice(why(r.status, r.data, 'control'));
    }
    showControl(state.control);
    showHint();
  }
  async function releaseControl() {
    state.releasing = true;
    const r = await api('POST', `/api/v1/microscopes/${state.microscope}/control`, { action: 'release' });
    state.lease = null;
    state.releasing = false;
    if (r.status !== 200) notice(why(r.status, r.data, 'release'));
    else notice('control released', true);
    showHint();
  }
  // A command is sent only when it can be accepted: while this page drives,
  // or a stop by a role that may stop without the lease.
  async function command(cmd) {
    if (!state.microscope || state.fatal) return null;
    const op = Object.keys(cmd)[0];
    const stopAnyway = op === 'stop' && state.perms.stop;
    if (!drives() && !stopAnyway) {
      if (op !== 'stop') {
        notice(state.perms.control ? `${op.replace('_', ' ')}: you do not drive — request control first`
          : `${op.replace('_', ' ')}: your role watches; it cannot drive the microscope`);
      }
      return null;
    }
    const body = { lease: state.lease || '', ...cmd };
    const r = await api('POST', `/api/v1/microscopes/${state.microscope}/commands`, body);
    state.commands.push({ cmd, status: r.status, data: r.data });
    if (state.commands.length > 50) state.commands.shift();
    if (r.status === 202) return r.data;
    if (r.status === 409) state.lease = null;
    notice(why(r.status, r.data, op.replace('_', ' ')));
    return null;
  }
  const focusStep = () => {
    const mag = state.scope ? state.scope.objective : 10;
    return mag >= 40 ? 1 : mag >= 20 ? 2 : mag >= 10 ? 5 : 20;
  };

  // ---------- frame ↔ slide coordinates
  function frameGeometry() {
    const f = state.shownFrame || (state.scope && state.scope.stage && {
      x_um: state.scope.stage.x_um, y_um: state.scope.stage.y_um, um_per_px: state.scope.um_per_px,
      width: video.videoWidth, height: video.videoHeight,
    });
    if (!f || !f.um_per_px || !video.videoWidth) return null;
    // The video is letterboxed into its element (object-fit: contain).
    const r = stageEl.getBoundingClientRect();
    const scale = Math.min(r.width / video.videoWidth, r.height / video.videoHeight);
    const ox = (r.width - video.videoWidth * scale) / 2, oy = (r.height - video.videoHeight * scale) / 2;
    return { f, scale, ox, oy, rect: r };
  }
  function toSlide(clientX, clientY) {
    const g = frameGeometry();
    if (!g) return null;
    const px = (clientX - g.rect.left - g.ox) / g.scale, py = (clientY - g.rect.top - g.oy) / g.scale;
    const w = g.f.width || video.videoWidth, h = g.f.height || video.videoHeight;
    return { x: g.f.x_um + (px + 0.5 - w / 2) * g.f.um_per_px, y: g.f.y_um + (py + 0.5 - h / 2) * g.f.um_per_px };
  }
  function toCanvas(g, x_um, y_um) {
    const w = g.f.width || video.videoWidth, h = g.f.height || video.videoHeight;
    const px = (x_um - g.f.x_um) / g.f.um_per_px + w / 2 - 0.5, py = (y_um - g.f.y_um) / g.f.um_per_px + h / 2 - 0.5;
    return [g.ox + px * g.scale, g.oy + py * g.scale];
  }

  // ---------- overlay: pointers and annotations, from slide coordinates
  const colours = ['#ffd166', '#06d6a0', '#4cc9f0', '#f72585', '#b5e48c', '#ff9f1c'];
  const colourOf = (key) => colours[[...key].reduce((a, c) => a + c.charCodeAt(0), 0) % colours.length];
  // The analysis layers, drawn here as vectors from slide µm (so they stay
  // crisp and on their cells while the stage moves): nucleus outlines, and
  // a density heat map on 50 µm cells of the analysed field (each cell's
  // density over the part of it the field covers, so it does not fade at
  // the field's edges).  Not drawn for another µm/px or an old result.
  function layersDrawable() {
    const n = state.nuclei, s = state.scope;
    return n && s && performance.now() - state.nucleiAt < 10000 &&
      !(n.um_per_px && s.um_per_px && Math.abs(n.um_per_px / s.um_per_px - 1) > 0.02);
  }
  function drawLayers(ctx, g) {
    if (!state.perms.analysis || !layersDrawable()) { state.layersDrawn = 0; return; }
    const n = state.nuclei;
    let drawn = 0;
    if (state.layers.heatmap) {
      const cell = 50, x0 = n.x_um - n.width_um / 2, y0 = n.y_um - n.height_um / 2;
      const cols = Math.ceil(n.width_um / cell), rows = Math.ceil(n.height_um / cell);
      const counts = new Float32Array(cols * rows);
      for (const c of n.nuclei) {
        const i = Math.floor((c.x_um - x0) / cell), j = Math.floor((c.y_um - y0) / cell);
        if (i >= 0 && j >= 0 && i < cols && j < rows) counts[j * cols + i]++;
      }
      for (let j = 0; j < rows; j++) {
        for (let i = 0; i < cols; i++) {
          const w = Math.min(cell, n.width_um - i * cell), h = Math.min(cell, n.height_um - j * cell);
          const perMm2 = counts[j * cols + i] / (w * h / 1e6);
          const t = Math.min(1, perMm2 / 6000);
          if (t <= 0) continue;
          const [ax, ay] = toCanvas(g, x0 + i * cell, y0 + j * cell);
          const [bx, by] = toCanvas(g, x0 + i * cell + w, y0 + j * cell + h);
          ctx.fillStyle = `hsla(${Math.round(240 - 240 * t)}, 90%, 50%, ${0.12 + 0.3 * t})`;
          ctx.fillRect(ax, ay, bx - ax, by - ay);
          drawn++;
        }
      }
    }
    if (state.layers.outlines) {
      ctx.lineWidth = 1.25;
      ctx.strokeStyle = 'rgba(0, 255, 140, .9)';
      ctx.beginPath();
      for (const c of n.nuclei) {
        const o = c.outline_um;
        if (o.length < 6) continue;
        for (let k = 0; k < o.length; k += 2) {
          const [x, y] = toCanvas(g, o[k], o[k + 1]);
          if (k) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        }
        ctx.closePath();
        drawn++;
      }
      ctx.stroke();
      ctx.strokeStyle = '#ff4d6d';
      for (const c of n.nuclei) {
        if (!c.mitotic_candidate) continue;
        const [x, y] = toCanvas(g, c.x_um, c.y_um);
        ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    state.layersDrawn = drawn;
  }
  for (const name of ['outlines', 'heatmap']) {
    const box = $('layer-' + name);
    box.checked = state.layers[name];
    box.onchange = () => { state.layers[name] = box.checked; localStorage.setItem('livemicro.' + name, box.checked ? '1' : '0'); };
  }
  function draw() {
    const g = frameGeometry();
    const dpr = window.devicePixelRatio || 1;
    const r = stageEl.getBoundingClientRect();
    if (canvas.width !== Math.round(r.width * dpr) || canvas.height !== Math.round(r.height * dpr)) {
      canvas.width = Math.round(r.width * dpr);
      canvas.height = Math.round(r.height * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, r.width, r.height);
    if (!g) return;
    drawLayers(ctx, g);
    ctx.lineWidth = 2;
    ctx.font = '13px system-ui, sans-serif';
    for (const a of state.annotations.values()) {
      const pts = a.points_um.map(([x, y]) => toCanvas(g, x, y));
      ctx.strokeStyle = ctx.fillStyle = colourOf(a.user);
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (a.kind === 'region') ctx.closePath();
      if (a.kind === 'point') ctx.arc(pts[0][0], pts[0][1], 5, 0, 2 * Math.PI);
      ctx.stroke();
      if (a.kind === 'arrow' && pts.length === 2) {
        const [[x0, y0], [x1, y1]] = pts, ang = Math.atan2(y1 - y0, x1 - x0);
        ctx.beginPath();
        ctx.moveTo(x1, y1);
        ctx.lineTo(x1 - 12 * Math.cos(ang - 0.4), y1 - 12 * Math.sin(ang - 0.4));
        ctx.lineTo(x1 - 12 * Math.cos(ang + 0.4), y1 - 12 * Math.sin(ang + 0.4));
        ctx.closePath();
        ctx.fill();
      }
      if (a.label) ctx.fillText(a.label, pts[0][0] + 6, pts[0][1] - 6);
    }
    const now = performance.now();
    for (const [key, p] of state.pointers) {
      if (now - p.at > 15000) { state.pointers.delete(key); continue; }
      const [x, y] = toCanvas(g, p.x_um, p.y_um);
      ctx.strokeStyle = ctx.fillStyle = colourOf(p.user);
      ctx.beginPath();
      ctx.arc(x, y, 9, 0, 2 * Math.PI);
      ctx.moveTo(x - 14, y); ctx.lineTo(x + 14, y); ctx.moveTo(x, y - 14); ctx.lineTo(x, y + 14);
      ctx.stroke();
      ctx.fillText(p.user, x + 12, y - 10);
    }
    if (state.draft.length) {
      // The region being drawn: its corners as dots, dashed edges.
      const pts = state.draft.map(([x, y]) => toCanvas(g, x, y));
      ctx.strokeStyle = ctx.fillStyle = '#ffffff';
      ctx.setLineDash([6, 4]);
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
      ctx.setLineDash([]);
      for (const [x, y] of pts) { ctx.beginPath(); ctx.arc(x, y, 3.5, 0, 2 * Math.PI); ctx.fill(); }
    }
    drawScaleBar(ctx, g);
  }
  // A scale bar in µm, bottom left of the video: 1, 2 or 5 × 10ⁿ µm, about
  // an eighth of the picture wide.
  function drawScaleBar(ctx, g) {
    const pxPerUm = g.scale / g.f.um_per_px;
    const want = (video.videoWidth * g.scale) / 8 / pxPerUm;
    const decade = 10 ** Math.floor(Math.log10(want));
    const um = [5, 2, 1].map((k) => k * decade).find((v) => v <= want) || decade;
    const len = um * pxPerUm;
    const x = g.ox + 14, y = g.oy + video.videoHeight * g.scale - 14;
    ctx.fillStyle = 'rgba(0,0,0,.55)';
    ctx.fillRect(x - 6, y - 22, len + 12, 28);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(x, y - 4, len, 4);
    ctx.font = '12px system-ui, sans-serif';
    ctx.fillText(um >= 1000 ? `${um / 1000} mm` : `${um} µm`, x, y - 8);
    state.scaleBar = { um, px: len };
  }
  (function loop() { draw(); drawMap(); requestAnimationFrame(loop); })();

  // ---------- the slide map: the whole slide, the field on screen, where
  // each participant points, the annotations and the path driven; a click
  // moves there (for the driver).
  let mapTimer = null;
  async function loadMap() {
    if (state.fatal || !state.microscope) return;
    const wait = state.mapFetchAt + 2500 - performance.now();
    if (wait > 0) {  // at most one fetch every 2.5 s, the last change never lost
      if (!mapTimer) mapTimer = setTimeout(() => { mapTimer = null; loadMap(); }, wait);
      return;
    }
    state.mapFetchAt = performance.now();
    const meta = await api('GET', `/api/v1/microscopes/${state.microscope}/overview`);
    if (meta.status !== 200) return;
    const png = await api('GET', `/api/v1/microscopes/${state.microscope}/overview.png`);
    if (png.status !== 200) return;
    const image = await createImageBitmap(png.data);
    state.map = meta.data;
    state.mapImage = image;
    $('map-note').textContent = (state.map.macro ? 'the slide' : 'the slide as seen so far') +
      (state.map.masked_um.length ? '; label area masked for your role' : '') +
      (state.perms.control ? ' — click to move there while you drive' : '');
  }
  function onStateForMap(s) {
    if (!state.map || !s || !s.stage) return;
    const p = state.map.path_um, last = p[p.length - 1];
    if (!last || Math.hypot(last[0] - s.stage.x_um, last[1] - s.stage.y_um) >= 25) p.push([s.stage.x_um, s.stage.y_um]);
    if (p.length > 4000) p.shift();
  }
  const mapCanvas = $('map');
  function drawMap() {
    const m = state.map;
    if (!m || !state.mapImage) return;
    const dpr = window.devicePixelRatio || 1;
    const w = mapCanvas.clientWidth, h = Math.round(w * m.height_um / m.width_um);
    if (mapCanvas.width !== Math.round(w * dpr) || mapCanvas.height !== Math.round(h * dpr)) {
      mapCanvas.width = Math.round(w * dpr);
      mapCanvas.height = Math.round(h * dpr);
      mapCanvas.style.height = h + 'px';
    }
    const ctx = mapCanvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const k = w / m.width_um;
    const at = (x, y) => [(x - m.x_um) * k, (y - m.y_um) * k];
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(state.mapImage, 0, 0, w, h);
    // What is masked for this role: hatched, said in words.
    for (const poly of m.masked_um) {
      ctx.save();
      ctx.beginPath();
      poly.forEach(([x, y], i) => { const [px, py] = at(x, y); if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
      ctx.closePath();
      ctx.clip();
      ctx.strokeStyle = 'rgba(255,255,255,.25)';
      for (let d = -h; d < w; d += 8) { ctx.beginPath(); ctx.moveTo(d, h); ctx.lineTo(d + h, 0); ctx.stroke(); }
      const [cx, cy] = at(poly.reduce((a, p) => a + p[0], 0) / poly.length, poly.reduce((a, p) => a + p[1], 0) / poly.length);
      ctx.fillStyle = '#ffffff';
      ctx.font = '11px system-ui, sans-serif';
      ctx.textAlign = 'center';
      ctx.fillText('label masked', cx, cy);
      ctx.restore();
    }
    // The path driven so far.
    ctx.strokeStyle = 'rgba(255, 209, 102, .85)';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    m.path_um.forEach(([x, y], i) => { const [px, py] = at(x, y); if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
    ctx.stroke();
    // Annotations.
    for (const a of state.annotations.values()) {
      ctx.strokeStyle = ctx.fillStyle = colourOf(a.user);
      ctx.beginPath();
      a.points_um.forEach(([x, y], i) => { const [px, py] = at(x, y); if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
      if (a.kind === 'region') ctx.closePath();
      ctx.stroke();
    }
    // Where each participant points.
    const now = performance.now();
    for (const p of state.pointers.values()) {
      if (now - p.at > 15000) continue;
      const [px, py] = at(p.x_um, p.y_um);
      ctx.fillStyle = colourOf(p.user);
      ctx.beginPath(); ctx.arc(px, py, 4, 0, 2 * Math.PI); ctx.fill();
    }
    // The field on screen.
    let field = null;
    const s = state.scope;
    if (s && s.stage && s.um_per_px) {
      const fw = s.um_per_px * (video.videoWidth || 1280), fh = s.um_per_px * (video.videoHeight || 720);
      const [x0, y0] = at(s.stage.x_um - fw / 2, s.stage.y_um - fh / 2);
      const fwpx = Math.max(4, fw * k), fhpx = Math.max(3, fh * k);
      const cx = x0 + fw * k / 2, cy = y0 + fh * k / 2;
      ctx.strokeStyle = '#4cc9f0';
      ctx.lineWidth = 2;
      ctx.strokeRect(cx - fwpx / 2, cy - fhpx / 2, fwpx, fhpx);
      field = { x: cx, y: cy };
    }
    state.mapView = { width: w, height: h, um_per_css_px: 1 / k, field };
    mapCanvas.classList.toggle('drivable', drives());
  }
  mapCanvas.addEventListener('click', (e) => {
    const m = state.map;
    if (!m) return;
    const r = mapCanvas.getBoundingClientRect();
    const k = r.width / m.width_um;
    const x = m.x_um + (e.clientX - r.left) / k, y = m.y_um + (e.clientY - r.top) / k;
    command({ move: { x_um: x, y_um: y } });
  });

  // ---------- mouse and keyboard
  document.querySelectorAll('input[name=tool]').forEach((r) => {
    r.onchange = () => { state.tool = r.value; state.draft = []; showHint(); };
  });
  let down = null;
  stageEl.addEventListener('mousedown', (e) => {
    stageEl.focus();
    down = { x: e.clientX, y: e.clientY, slide: toSlide(e.clientX, e.clientY) };
  });
  stageEl.addEventListener('mouseup', async (e) => {
    if (!down) return;
    const d = down;
    down = null;
    const moved = Math.hypot(e.clientX - d.x, e.clientY - d.y) > 4;
    const here = toSlide(e.clientX, e.clientY);
    if (!here || !d.slide) return;
    if (state.tool === 'move') {
      if (!moved) await command({ move: { x_um: here.x, y_um: here.y } });            // click: centre here
      else await command({ move_by: { dx_um: d.slide.x - here.x, dy_um: d.slide.y - here.y } });  // drag the slide
    } else if (state.tool === 'pointer') {
      send({ type: 'pointer', x_um: here.x, y_um: here.y });
    } else if (state.tool === 'arrow' && moved) {
      await annotate('arrow', [[d.slide.x, d.slide.y], [here.x, here.y]]);
    } else if (state.tool === 'region') {
      // The second click of a double-click closes the region: it adds no
      // corner (nor does a click on the last corner again).
      const last = state.draft[state.draft.length - 1];
      const g = frameGeometry();
      const near = last && g && Math.hypot(last[0] - here.x, last[1] - here.y) / g.f.um_per_px * g.scale < 4;
      if (e.detail < 2 && !near) state.draft.push([here.x, here.y]);
      showHint();
    }
  });
  stageEl.addEventListener('dblclick', async () => {
    if (state.tool !== 'region') return;
    if (state.draft.length < 3) {
      notice(`a region needs at least 3 corners (${state.draft.length} so far)`);
      return;
    }
    const pts = state.draft;
    state.draft = [];
    showHint();
    await annotate('region', pts);
  });
  let wheelAt = 0;
  stageEl.addEventListener('wheel', (e) => {
    e.preventDefault();
    if (performance.now() - wheelAt < 120) return;
    wheelAt = performance.now();
    command({ focus_by: { dz_um: (e.deltaY < 0 ? 1 : -1) * focusStep() } });
  }, { passive: false });

  // Arrow keys jog at one field of view per second while held; releasing
  // stops.  The daemon's dead-man time stops a jog that is not renewed.
  const held = new Set();
  let jogTimer = null;
  function jog() {
    const fov = state.scope ? state.scope.um_per_px * (video.videoWidth || 1280) : 1000;
    const vx = (held.has('ArrowRight') - held.has('ArrowLeft')) * fov;
    const vy = (held.has('ArrowDown') - held.has('ArrowUp')) * fov;
    if (vx || vy) command({ jog: { vx_um_s: vx, vy_um_s: vy } });
  }
  stageEl.addEventListener('keydown', (e) => {
    if (e.key.startsWith('Arrow')) {
      e.preventDefault();
      if (held.has(e.key)) return;
      held.add(e.key);
      jog();
      if (!jogTimer) jogTimer = setInterval(jog, 300);
    } else if (e.key === '+' || e.key === '=') {
      command({ focus_by: { dz_um: focusStep() } });
    } else if (e.key === '-' || e.key === '_') {
      command({ focus_by: { dz_um: -focusStep() } });
    } else if (e.key === 'a') {
      command({ autofocus: {} });
    } else if (e.key === 'Escape') {
      state.draft = [];
      showHint();
      command({ stop: {} });
    }
  });
  stageEl.addEventListener('keyup', (e) => {
    if (!held.delete(e.key)) return;
    if (held.size) { jog(); return; }
    clearInterval(jogTimer);
    jogTimer = null;
    command({ stop: {} });
  });
  stageEl.addEventListener('blur', () => {
    if (!held.size) return;
    held.clear();
    clearInterval(jogTimer);
    jogTimer = null;
    command({ stop: {} });
  });

  $('request').onclick = () => requestControl(false);
  $('release').onclick = releaseControl;
  $('focus-up').onclick = () => command({ focus_by: { dz_um: focusStep() } });
  $('focus-down').onclick = () => command({ focus_by: { dz_um: -focusStep() } });
  $('autofocus').onclick = () => command({ autofocus: {} });
  $('stop').onclick = () => command({ stop: {} });
  $('still').onclick = async () => {
    const r = await api('POST', `/api/v1/sessions/${sessionId}/stills`);
    if (r.status !== 200) { notice(why(r.status, r.data, 'still')); return; }
    const link = $('still-link');
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(r.data);
    link.download = `livemicro-still-${new Date().toISOString().replace(/[:.]/g, '-')}.png`;
    link.classList.remove('hidden');
    notice('still taken (lossless PNG, as your view shows it)', true);
  };
  async function annotate(kind, points) {
    if (!state.perms.annotations) return;
    const label = kind === 'region' || kind === 'arrow' ? (prompt(`label for this ${kind}?`) || '') : '';
    const r = await api('POST', `/api/v1/microscopes/${state.microscope}/annotations`, { kind, label, points_um: points });
    if (r.status !== 201) notice(why(r.status, r.data, 'annotation'));
    else notice(`${kind} saved (${points.length} points)`, true);
  }
  async function loadAnnotations() {
    if (!state.perms.annotations) return;
    const r = await api('GET', `/api/v1/microscopes/${state.microscope}/annotations`);
    if (r.status === 200) for (const a of r.data.annotations) state.annotations.set(a.id, a);
  }

  // ---------- WebRTC (signalled on the socket, or WHEP) and the socket
  function newPeer() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    pc.ontrack = (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    pc.oniceconnectionstatechange = () => {
      state.iceState = pc.iceConnectionState;
      $('ice').textContent = state.iceState;
      if (state.iceState === 'connected' || state.iceState === 'completed') { setConn('live', 'badge-ok'); state.retry = 0; }
      if (state.iceState === 'failed') reconnect('ICE failed');
    };
    return pc;
  }
  async function onOffer(sdp) {
    const pc = newPeer();
    pc.onicecandidate = (e) => {
      if (e.candidate) send({ type: 'ice', candidate: e.candidate.candidate, sdpMLineIndex: e.candidate.sdpMLineIndex });
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    // Candidates that came before the offer was applied.
    for (const c of state.pendingIce || []) pc.addIceCandidate(c).catch(() => {});
    state.pendingIce = [];
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    send({ type: 'answer', sdp: answer.sdp });
  }

  // WHEP: receive-only H.264, the offer sent once ICE gathering completed
  // (at most 2 s), the answer holds the daemon's candidates (no trickle).
  async function startWhep() {
    const pc = newPeer();
    pc.addTransceiver('video', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') { resolve(); return; }
      const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, 2000);
    });
    const res = await fetch(`/whep/${sessionId}`, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) {
      const why = await res.json().catch(() => ({}));
      throw new Error(`WHEP ${res.status}: ${why.error || ''}`);
    }
    if (pc !== state.pc) return;  // started over meanwhile
    state.whepResource = new URL(res.headers.get('Location'), location.href).pathname;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  }
  function endWhep(keepalive = false) {
    if (!state.whepResource) return;
    fetch(state.whepResource, { method: 'DELETE', keepalive, headers: { Authorization: 'Bearer ' + token } }).catch(() => {});
    state.whepResource = null;
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    switch (m.type) {
      case 'welcome':
        state.session = m.session;
        state.microscope = m.session.microscope;
        $('who').textContent = `${m.session.user} · ${m.session.role} · microscope ${m.session.microscope}`;
        $('offline').classList.toggle('hidden', m.online);
        applyPermissions(m.permissions);
        showState(m.state);
        showFeatures(m.features);
        showControl(m.control);
        loadAnnotations();
        if (m.slide_map) loadMap();
        setConn('negotiating', 'badge-wait');
        if (state.whep) startWhep().catch((e) => reconnect('WHEP failed: ' + e));
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
      case 'frame': {
        // A loaded server can send a frame's record after the frame was
        // shown: it is matched then.
        const rtp = m.rtp >>> 0;
        const shownAt = state.shownByRtp.get(rtp);
        if (shownAt !== undefined) {
          state.shownByRtp.delete(rtp);
          frameShown(m, shownAt);
        } else {
          state.frameByRtp.set(rtp, m);
          if (state.frameByRtp.size > 600) state.frameByRtp.delete(state.frameByRtp.keys().next().value);
        }
        break;
      }
      case 'state': showState(m.data); onStateForMap(m.data); break;
      case 'overview': loadMap(); break;
      case 'features': showFeatures(m.data); break;
      case 'nuclei': state.nuclei = m.data; state.nucleiAt = performance.now(); showAnalysisState(); break;
      case 'control': showControl(m.data); break;
      case 'nodes': state.nodes = Array.isArray(m.nodes) ? m.nodes : []; break;
      case 'presence': showPresence(m.data); break;
      case 'command':
        if (m.data.status === 'failed') notice(`${m.data.op} failed: ${m.data.detail}`);
        else if (m.data.op === 'autofocus') notice(`autofocus: ${m.data.detail}`, true);
        break;
      case 'pointer':
        state.pointers.set(m.data.session, { ...m.data, at: performance.now() });
        break;
      case 'annotation': state.annotations.set(m.data.id, m.data); break;
      case 'annotation_deleted': state.annotations.delete(m.data.id); break;
      case 'offline': $('offline').classList.remove('hidden'); break;
      case 'online': $('offline').classList.add('hidden'); break;
      case 'pong': {
        // The server's clock from the exchange with the shortest round trip
        // (its error is at most half that trip): one slow pong on a loaded
        // machine must not shift every latency figure.
        const rtt = clockMs() - m.t;
        if (rtt >= 0 && rtt <= state.bestRttMs) {
          state.bestRttMs = rtt;
          state.clockOffsetMs = m.server_time_us / 1000 - (m.t + rtt / 2);
        }
        if (state.clockPingsLeft > 0) {
          state.clockPingsLeft--;
          send({ type: 'ping', t: clockMs() });
        }
        break;
      }
      case 'error': setConn('error: ' + m.error, 'badge-bad'); break;
    }
  }

  // Each frame shown: its RTP timestamp gives its capture time and where the
  // stage was, so overlays sit on the slide, not on the screen.
  function onVideoFrame(now, meta) {
    state.framesDecoded = meta.presentedFrames || state.framesDecoded + 1;
    state.shown.push(performance.now());
    if (meta.rtpTimestamp !== undefined) {
      const rtp = meta.rtpTimestamp >>> 0;
      const shownAt = performance.timeOrigin + (meta.presentationTime || now);
      const f = state.frameByRtp.get(rtp);
      if (f) {
        state.frameByRtp.delete(rtp);
        frameShown(f, shownAt);
      } else {
        // Its record is still on its way (see the 'frame' message).
        state.shownByRtp.set(rtp, shownAt);
        if (state.shownByRtp.size > 120) state.shownByRtp.delete(state.shownByRtp.keys().next().value);
      }
    }
    video.requestVideoFrameCallback(onVideoFrame);
  }

  // A frame shown at `shownAt` (the page's clock, ms) with its record from
  // the server: where it was taken, for the overlays, and its latency. On
  // the page's clock: the server's clock offset is applied when the figures
  // are made, so that every sample gets the best offset known then, not the
  // rougher one of the moment the frame was shown.
  function frameShown(f, shownAt) {
    if (f.um_per_px) state.shownFrame = f;
    state.shownMinusCapture.push(shownAt - f.capture_unix_us / 1000);
    if (state.shownMinusCapture.length > 300) state.shownMinusCapture.shift();
  }

  function report() {
    if (state.fatal) return;
    showAnalysisState();
    const t = performance.now();
    state.shown = state.shown.filter((x) => t - x < 1000);
    const latencies = state.shownMinusCapture.map((d) => d + state.clockOffsetMs)
      .filter((latency) => latency > -50 && latency < 10000);
    const recent = latencies.slice(-60);
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
      latency_samples: latencies.length,
      latencies_ms: latencies,
      // The latencies' error bound is half the best round trip.
      clock_offset_ms: isFinite(state.bestRttMs) ? state.clockOffsetMs : null,
      clock_rtt_ms: isFinite(state.bestRttMs) ? state.bestRttMs : null,
      ice_state: state.iceState,
      drives: drives(),
      user_agent: navigator.userAgent,
    } });
    send({ type: 'ping', t: clockMs() });
  }

  // One clear message, everything disabled, no more requests.
  function fatal(message) {
    state.fatal = message;
    setConn('not connected', 'badge-bad');
    const el = $('fatal');
    el.textContent = message;
    el.classList.remove('hidden');
    endWhep();
    if (state.pc) { state.pc.close(); state.pc = null; }
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; }
    document.querySelectorAll('button, input').forEach((el) => { el.disabled = true; });
    $('hint').textContent = '';
    $('notice').textContent = '';
    document.body.classList.add('dead');
  }
  let reconnectTimer = null;
  function reconnect(reason) {
    if (state.fatal) return;
    setConn('reconnecting', 'badge-bad');
    console.warn('LiveMicro: reconnecting:', reason);
    if (reconnectTimer || state.failingOver) return;
    const retry = () => {
      const delay = Math.min(5000, 500 * 2 ** state.retry++);
      reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, delay);
    };
    if (state.nodes.length < 2) { retry(); return; }
    state.failingOver = true;
    failover().then((moved) => { state.failingOver = false; if (!moved) retry(); });
  }

  // Does anything answer at `base`?  A no-cors fetch resolves on any answer
  // and fails when nothing listens there (no CORS needed: it is not read).
  async function reachable(base, ms) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      await fetch(base + '/healthz', { mode: 'no-cors', cache: 'no-store', signal: abort.signal });
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  // How long `base` takes to answer, in ms; Infinity when it does not
  // within `ms`.
  async function roundTripMs(base, ms) {
    const t0 = performance.now();
    return (await reachable(base, ms)) ? performance.now() - t0 : Infinity;
  }

  // Of `candidates`, the node nearest to this viewer: all probed at once,
  // each twice when it answers (the first may pay for a connection); of
  // those that answer, the one of this node's site with the lowest round
  // trip, else the lowest of all (the site label says where the viewer is;
  // the round trip chooses within it, or where there is no label).  Null
  // when none answers.
  async function nearestNode(candidates) {
    const probe = async (n) => {
      const first = await roundTripMs(n.url, 800);
      return first === Infinity ? first : Math.min(first, await roundTripMs(n.url, 800));
    };
    const times = await Promise.all(candidates.map(probe));
    const answered = candidates.map((n, i) => ({ n, ms: times[i] }))
      .filter((c) => c.ms !== Infinity).sort((a, b) => a.ms - b.ms);
    const site = state.nodes[0] ? state.nodes[0].site : undefined;
    const best = answered.find((c) => c.n.site === site) || answered[0];
    return best ? best.n : null;
  }

  // This node is gone: the page goes on at the nearest other node of the
  // edge cloud that answers, which serves this session's view from then on.
  // False when this node still answers (a blip: retry it) or none does.
  async function failover() {
    if (await reachable(location.origin, 800)) return false;
    const n = await nearestNode(state.nodes.filter((x) => x.url && x.url !== location.origin));
    if (!n) return false;
    setConn(`moving to node ${n.name}`, 'badge-wait');
    console.warn('LiveMicro: this node is gone; going on at', n.name);
    location.replace(`${n.url}/view/${sessionId}${location.search}#token=${token}`);
    return true;
  }

  function connect() {
    endWhep();
    if (state.pc) { state.pc.close(); state.pc = null; }
    state.pendingIce = [];
    if (state.ws) { state.ws.onclose = null; state.ws.close(); }
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${sessionId}`);
    state.ws = ws;
    // A new server may run on another clock: its offset is learnt afresh,
    // from a short run of pings (each sent when the last one's pong comes).
    state.bestRttMs = Infinity;
    state.shownMinusCapture = [];
    state.frameByRtp.clear();
    state.shownByRtp.clear();
    state.clockPingsLeft = kClockPings;
    ws.onopen = () => { send({ type: 'hello', token, webrtc: !state.whep, nuclei: true }); send({ type: 'ping', t: clockMs() }); };
    ws.onmessage = onMessage;
    ws.onclose = (e) => {
      if (e.code === 4401) { fatal('This link is not valid: its token is wrong or its session has ended. Ask the session owner for a new link.'); return; }
      if (e.code === 4403) { fatal('This session has ended. Ask the session owner for a new link to watch again.'); return; }
      reconnect('socket closed');
    };
    // No video within 10 s: start over (ICE can fail on the first try).
    setTimeout(() => { if (ws === state.ws && state.framesDecoded === 0 && !state.fatal) reconnect('no video'); }, 10000);
  }

  if (!token) {
    fatal('This link has no token: open the full link you were given (it ends in #token=…).');
    return;
  }
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onVideoFrame);
  window.addEventListener('pagehide', () => endWhep(true));
  setInterval(report, 1000);
  connect();
})();
