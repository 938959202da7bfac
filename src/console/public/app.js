// The MotiveProxy console: every session live (pushed by the server over GET /console/live),
// one session's transcript and state chart, and a side played from the browser over the
// WebSocket side (GET /v1/realtime). Plain modern JavaScript, no framework, no build step.
import { describeState, drawChart, layout } from './chart.js';
import { $, node, storeAdminKey, storedAdminKey } from './dom.js';
import { showAdminView } from './admin.js';

const SIDES = ['A', 'B'];
const other = (side) => (side === 'A' ? 'B' : 'A');

const ui = {
  sessions: new Map(),
  /** server clock − this clock, so countdowns follow the server's deadlines */
  skew: 0,
  admin: false,
  /** client API keys are required to play a side or end a session */
  keys: false,
  timing: null,
  chart: null,
  chartOrder: [],
  feed: null,
  feedRetryMs: 500,
  route: { view: 'sessions', id: null },
  transcript: { id: null, entries: [], skipped: 0, closed: false },
  /** the side this tab plays: { ws, session, side, ready, pending, streamed, lastValue, awaitingSince, … } */
  play: null,
  /** how this tab's last play of a side ended: { session, text } */
  playEnded: null,
};
/** A message about the person's last action (a refused frame, an edit that cannot be made). */
let playNotice = '';

const serverNow = () => Date.now() + ui.skew;

// ---------------------------------------------------------------- formatting

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function ago(at) {
  if (at == null) return '—';
  const s = Math.max(0, Math.round((serverNow() - at) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

const clock = (at) => new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A live countdown to `deadline` (or a timer since `since`), refreshed every second by tick(). */
function timerEl(held, { prefix = '', warnBelowMs = 10_000 } = {}) {
  if (held.deadline == null) return node('span', { class: 'timer up', dataSince: held.since, dataPrefix: prefix });
  return node('span', { class: 'timer', dataDeadline: held.deadline, dataSince: held.since, dataWarn: warnBelowMs, dataPrefix: prefix });
}

function tick() {
  const now = serverNow();
  for (const el of document.querySelectorAll('[data-ago]')) el.textContent = ago(Number(el.dataset.ago));
  for (const el of document.querySelectorAll('.timer')) {
    const since = Number(el.dataset.since);
    const prefix = el.dataset.prefix ?? '';
    if (el.dataset.deadline) {
      const deadline = Number(el.dataset.deadline);
      const left = deadline - now;
      const total = Math.max(1, deadline - since);
      el.textContent = left > 0 ? `${prefix}${duration(left)} left` : `${prefix}timing out`;
      el.classList.toggle('warn', left < Math.max(Number(el.dataset.warn), total * 0.25));
      el.style.setProperty('--left', String(Math.max(0, Math.min(1, left / total))));
    } else {
      el.textContent = `${prefix}${duration(now - since)}`;
    }
  }
  renderPlayStatus();
}

// ---------------------------------------------------------------- theme

function applyThemeButton() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === 'dark'
    : matchMedia('(prefers-color-scheme: dark)').matches;
  $('theme-toggle').setAttribute('aria-label', dark ? 'Switch to light theme' : 'Switch to dark theme');
  $('theme-toggle').setAttribute('aria-pressed', String(dark));
}

$('theme-toggle').addEventListener('click', () => {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === 'dark'
    : matchMedia('(prefers-color-scheme: dark)').matches;
  const next = dark ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem('motive-console-theme', next);
  } catch {
    /* not kept: fine */
  }
  applyThemeButton();
});
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', applyThemeButton);
applyThemeButton();

// ---------------------------------------------------------------- the live feed

function setFeedStatus(state, text) {
  const el = $('feed-status');
  el.dataset.state = state;
  el.textContent = text;
}

function connectFeed() {
  const key = adminKey();
  const query = key ? `?key=${encodeURIComponent(key)}` : '';
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/console/live${query}`);
  ui.feed = ws;
  ws.addEventListener('open', () => {
    ui.feedRetryMs = 500;
    setFeedStatus('live', 'live');
    watch();
  });
  ws.addEventListener('message', (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    onFeedFrame(frame);
  });
  ws.addEventListener('close', () => {
    if (ui.feed !== ws) return;
    setFeedStatus('down', 'reconnecting…');
    // The server went away (a restart): connect again, backing off up to 5 s.
    setTimeout(connectFeed, ui.feedRetryMs);
    ui.feedRetryMs = Math.min(5000, ui.feedRetryMs * 2);
  });
}

function watch() {
  if (ui.feed?.readyState !== WebSocket.OPEN) return;
  ui.feed.send(JSON.stringify({ type: 'watch', session: ui.route.view === 'session' ? ui.route.id : null }));
}

function onFeedFrame(frame) {
  if (typeof frame.now === 'number') ui.skew = frame.now - Date.now();
  switch (frame.type) {
    case 'hello':
      ui.admin = frame.admin === true;
      ui.keys = frame.keys === true;
      // An admin key guards the admin actions and this page has not given it (or a wrong one).
      $('admin-key-box').hidden = !(frame.adminKey === true && !ui.admin);
      ui.timing = frame.timing;
      $('key-box').hidden = !ui.keys;
      break;
    case 'sessions':
      ui.sessions = new Map(frame.sessions.map((s) => [s.id, s]));
      renderSessions();
      if (ui.route.view === 'session') renderSession();
      break;
    case 'transcript':
      onTranscript(frame);
      break;
    case 'error':
      // The transcript needs the admin key this page has not given: say so where it would be.
      if (ui.route.view === 'session') $('transcript').replaceChildren(node('li', { class: 'entry skipped', text: frame.message }));
      break;
  }
}

// ---------------------------------------------------------------- routing

function route() {
  const match = /^#\/s\/(.+)$/.exec(location.hash);
  let id = null;
  if (match) {
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = null;
    }
  }
  const admin = /^#\/(keys|webhooks|bridges|api)$/.exec(location.hash)?.[1] ?? null;
  const next = admin ? { view: admin, id: null } : id ? { view: 'session', id } : { view: 'sessions', id: null };
  const changed = next.view !== ui.route.view || next.id !== ui.route.id;
  ui.route = next;
  $('sessions-view').hidden = next.view !== 'sessions';
  $('conversation-view').hidden = next.view !== 'session';
  showAdminView(admin);
  for (const link of document.querySelectorAll('.bar-nav a')) {
    if (link.dataset.view === next.view || (link.dataset.view === 'sessions' && next.view === 'session')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!changed) return;
  if (ui.play && ui.play.session !== next.id) leave();
  ui.transcript = { id: next.id, entries: [], skipped: 0, closed: false };
  $('transcript').replaceChildren();
  document.title = next.id ? `${next.id.replace('\u001f', '/')} · MotiveProxy console` : 'MotiveProxy console';
  watch();
  if (next.view === 'session') renderSession();
  else renderSessions();
}

window.addEventListener('hashchange', route);

$('open-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('open-id').value.trim();
  if (id) location.hash = `#/s/${encodeURIComponent(id)}`;
});

// ---------------------------------------------------------------- sessions view

function stateStrip(state) {
  const strip = node('span', { class: 'strip', 'aria-hidden': 'true' });
  for (const name of ui.chartOrder) strip.append(node('span', { class: name === state ? 'dot on' : 'dot', title: name }));
  return strip;
}

function sideCell(s) {
  if (!s.joined && !s.socket) return node('span', { class: 'muted', text: 'not joined' });
  return node(
    'span',
    { class: 'side-cell' },
    node('span', { class: 'protocol', text: s.protocol ?? (s.joined ? 'unknown protocol' : 'websocket') }),
    node('span', { class: 'muted', text: ` · ${s.turns} turn${s.turns === 1 ? '' : 's'}` }),
  );
}

/** Who waits for whom, for how long, and what is queued. */
function waitingItems(session) {
  const items = [];
  for (const side of SIDES) {
    const s = session.sides[side];
    const peer = session.sides[other(side)];
    if (s.held) {
      const whom = peer.joined ? other(side) : 'a peer';
      const what = s.held.timer === 'none' ? `${side} listens for ${whom}` : `${side} waits for ${whom}`;
      items.push(node('span', { class: 'wait' }, node('span', { text: `${what} · ` }), timerEl(s.held)));
    }
    if (s.queued > 0) items.push(node('span', { class: 'wait queued', text: `${s.queued} queued for ${side}` }));
  }
  return items;
}

/** A session as people read it: its name, after its tenant's when it has one. */
function label(s) {
  const name = s.name ?? s.id;
  return s.tenant ? `${s.tenant}/${name}` : name;
}

/** The name a client uses for the session (the id without its tenant). */
function nameOf(id) {
  const s = ui.sessions.get(id);
  if (s?.name) return s.name;
  const at = id.indexOf('\u001f');
  return at === -1 ? id : id.slice(at + 1);
}

/** The tenant of a session id, or null for the default tenant. */
function tenantOf(id) {
  const at = id.indexOf('\u001f');
  return at === -1 ? null : id.slice(0, at);
}

function renderSessions() {
  const body = $('sessions-body');
  const focusedId = document.activeElement?.closest?.('tr')?.dataset.session ?? null;
  const list = [...ui.sessions.values()];
  $('session-count').textContent = list.length ? `(${list.length})` : '';
  $('sessions-empty').hidden = list.length > 0;
  $('sessions-table').hidden = list.length === 0;
  const rows = list.map((s) => {
    const link = node('a', { href: `#/s/${encodeURIComponent(s.id)}`, class: 'session-link', text: label(s) });
    const waiting = waitingItems(s);
    const tr = node(
      'tr',
      { dataSession: s.id, dataState: s.state },
      node('th', { scope: 'row', dataLabel: 'Session' }, link),
      node('td', { dataLabel: 'State' }, node('div', {}, node('span', { class: `badge state-${s.state}`, text: s.state }), stateStrip(s.state))),
      node('td', { dataLabel: 'Side A' }, sideCell(s.sides.A)),
      node('td', { dataLabel: 'Side B' }, sideCell(s.sides.B)),
      node('td', { dataLabel: 'Last activity' }, node('span', { dataAgo: s.lastActivityAt ?? '', text: ago(s.lastActivityAt) })),
      node('td', { dataLabel: 'Waiting', class: 'waiting' }, node('div', {}, ...(waiting.length ? waiting : [node('span', { class: 'muted', text: '—' })]))),
    );
    tr.addEventListener('click', (event) => {
      if (event.target.closest('a')) return;
      location.hash = `#/s/${encodeURIComponent(s.id)}`;
    });
    return tr;
  });
  body.replaceChildren(...rows);
  if (focusedId !== null) body.querySelector(`tr[data-session="${CSS.escape(focusedId)}"] a`)?.focus();
  tick();
}

// ---------------------------------------------------------------- conversation view

function currentSession() {
  return ui.route.view === 'session' ? (ui.sessions.get(ui.route.id) ?? null) : null;
}

function renderSession() {
  const id = ui.route.id;
  const s = currentSession();
  $('conv-id').textContent = s ? label(s) : id.replace('\u001f', '/');
  const state = s ? s.state : ui.transcript.closed && ui.transcript.entries.length ? 'CLOSED' : s === null ? 'not live' : '';
  const badge = $('conv-state');
  badge.textContent = state;
  badge.className = `badge state-${state.replace(/\s/g, '-')}`;

  const enc = encodeURIComponent(nameOf(id));
  const tenant = tenantOf(id);
  const inTenant = tenant ? `&tenant=${encodeURIComponent(tenant)}` : '';
  $('admin-actions').hidden = !ui.admin;
  $('download-md').href = `/admin/sessions/${enc}/transcript?format=md${inTenant}`;
  $('download-md').setAttribute('download', `${nameOf(id)}.md`);
  $('download-json').href = `/admin/sessions/${enc}/transcript?format=json${inTenant}`;
  $('download-json').setAttribute('download', `${nameOf(id)}.json`);
  $('end-session').disabled = !s;

  const cards = $('side-cards');
  cards.replaceChildren(...SIDES.map((side) => sideCard(side, s)));

  if (ui.chart) {
    drawChart($('chart'), ui.chart, s ? s.state : ui.transcript.closed ? 'CLOSED' : null);
    const now = $('chart-now');
    const current = s ? s.state : null;
    if (!current) {
      now.replaceChildren(node('p', { class: 'hint', text: 'The session is not live: it has closed, or nobody has spoken in it yet.' }));
    } else {
      const d = describeState(ui.chart, current);
      const items = [];
      for (const leave of d.leaves) items.push(node('li', {}, node('strong', { text: `→ ${leave.target}` }), ` on ${leave.on.join(', ')}`));
      if (d.stays.length) items.push(node('li', {}, node('strong', { text: '↻ stays' }), ` on ${d.stays.join(', ')}`));
      now.replaceChildren(node('p', {}, 'Now in ', node('strong', { text: current }), d.final ? ' (final).' : ':'), node('ul', {}, ...items));
    }
  }
  $('transcript-empty').hidden = ui.transcript.entries.length > 0;
  renderJoin();
  renderPlayStatus();
  tick();
}

function sideCard(side, s) {
  const info = s?.sides[side];
  const mine = ui.play && ui.play.session === ui.route.id && ui.play.side === side && ui.play.ready;
  const lines = [];
  if (!info || (!info.joined && !info.socket)) {
    lines.push(node('span', { class: 'muted', text: 'not joined' }));
  } else {
    lines.push(node('span', { class: 'protocol', text: info.protocol ?? 'unknown protocol' }));
    lines.push(node('span', { class: 'muted', text: ` · ${info.turns} turn${info.turns === 1 ? '' : 's'} · ${info.deliveries} received` }));
  }
  const status = [];
  if (info?.held) {
    const peer = s.sides[other(side)];
    const whom = peer.joined ? other(side) : 'a peer';
    status.push(node('div', { class: 'card-wait' }, node('span', { text: `${info.held.timer === 'none' ? 'listening for' : 'waiting for'} ${whom} · ` }), timerEl(info.held)));
  }
  if (info?.queued) status.push(node('div', { class: 'muted', text: `${info.queued} message${info.queued === 1 ? '' : 's'} queued for it` }));
  if (info?.socket) status.push(node('div', { class: 'held-by', text: mine ? 'played by you, in this tab' : 'held by a WebSocket connection' }));
  return node('div', { class: `side-card side-${side}${mine ? ' mine' : ''}`, dataSide: side }, node('h3', { text: `Side ${side}` }), node('div', {}, ...lines), ...status);
}

function entryEl(entry) {
  const meta = node(
    'div',
    { class: 'meta' },
    node('span', { class: 'who', text: entry.side }),
    node('span', { text: ` · turn ${entry.turn} · ` }),
    node('time', { datetime: new Date(entry.at).toISOString(), text: clock(entry.at) }),
    entry.kind === 'handshake' ? node('span', { class: 'tag', text: 'handshake, not forwarded' }) : null,
  );
  const text = node('div', { class: 'text', text: entry.content });
  if (entry.kind === 'delivery') {
    // The text is above, as the other side's message: only who got it, and when.
    return node(
      'li',
      { class: `entry delivery side-${entry.side}`, dataKind: 'delivery', dataSide: entry.side, dataTurn: entry.turn },
      node('span', { text: `→ delivered to ${entry.side}, answering its turn ${entry.turn} · ` }),
      node('time', { datetime: new Date(entry.at).toISOString(), text: clock(entry.at) }),
    );
  }
  if (entry.kind === 'system' || entry.kind === 'preamble') {
    // A preamble (a chat UI's character greeting before the first user message) is the client's own, like its system prompt.
    const label = entry.kind === 'system' ? 'System prompt' : 'Preamble (its own greeting, not forwarded)';
    const summary = node('summary', {}, node('span', { text: `${label} of ${entry.side} · turn ${entry.turn} · ` }), node('time', { datetime: new Date(entry.at).toISOString(), text: clock(entry.at) }));
    return node('li', { class: `entry system side-${entry.side}`, dataKind: entry.kind }, node('details', {}, summary, text));
  }
  return node('li', { class: `entry side-${entry.side} kind-${entry.kind}`, dataKind: entry.kind, dataSide: entry.side, dataTurn: entry.turn }, meta, text);
}

function onTranscript(frame) {
  if (frame.session !== ui.route.id) return;
  const list = $('transcript');
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  if (frame.reset) {
    ui.transcript = { id: frame.session, entries: [...frame.entries], skipped: frame.skipped, closed: frame.closed };
    const items = frame.entries.map(entryEl);
    if (frame.skipped > 0) items.unshift(node('li', { class: 'entry skipped', text: `${frame.skipped} earlier entries are not shown: download the transcript for all of them.` }));
    list.replaceChildren(...items);
  } else {
    ui.transcript.entries.push(...frame.entries);
    ui.transcript.closed = frame.closed;
    list.append(...frame.entries.map(entryEl));
  }
  if (frame.entries.some((e) => e.side !== ui.play?.side)) clearOtherTyping();
  if (nearBottom || frame.reset) list.scrollTop = list.scrollHeight;
  if (frame.closed && ui.play) {
    ui.transcript.closed = true;
  }
  renderSession();
}

$('end-session').addEventListener('click', async () => {
  const id = ui.route.id;
  if (!id || !confirm(`End session “${id.replace('\u001f', '/')}”? Requests still waiting in it get 410 session_closed.`)) return;
  // With the admin key, the admin route ends any session; otherwise a participant's route.
  const admin = adminKey();
  const key = admin || apiKey();
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  const tenant = tenantOf(id);
  const url = admin
    ? `/admin/sessions/${encodeURIComponent(nameOf(id))}${tenant ? `?tenant=${encodeURIComponent(tenant)}` : ''}`
    : `/v1/sessions/${encodeURIComponent(nameOf(id))}`;
  const response = await fetch(url, { method: 'DELETE', headers }).catch(() => null);
  notice(response?.ok ? `Session “${id.replace('\u001f', '/')}” ended.` : `The session could not be ended${response ? ` (${response.status})` : ''}.`);
});

function notice(text) {
  const el = $('conv-notice');
  el.textContent = text;
  el.hidden = !text;
}

/** The admin key the person entered, when the proxy guards its admin actions with one. */
function adminKey() {
  return storedAdminKey() || (ui.adminKeyTyped ?? '');
}

$('admin-key-box').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('admin-key').value.trim();
  ui.adminKeyTyped = key;
  storeAdminKey(key);
  // Connect the feed again with the key: the server says whether it opens the admin actions.
  const old = ui.feed;
  ui.feed = null;
  old?.close();
  connectFeed();
});

// Transcript downloads carry the admin key when there is one (a plain link cannot send it).
for (const id of ['download-md', 'download-json']) {
  $(id).addEventListener('click', async (event) => {
    const key = adminKey();
    if (!key) return;
    event.preventDefault();
    const link = $(id);
    const response = await fetch(link.href, { headers: { authorization: `Bearer ${key}` } }).catch(() => null);
    if (!response?.ok) {
      notice(`The transcript could not be downloaded${response ? ` (${response.status})` : ''}.`);
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement('a');
    save.href = url;
    save.download = link.getAttribute('download') ?? 'transcript';
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
}

// ---------------------------------------------------------------- playing a side

/** The client API key the person entered, when the proxy requires one. */
function apiKey() {
  return ui.keys ? $('api-key').value.trim() : '';
}

try {
  $('api-key').value = sessionStorage.getItem('motive-console-key') ?? '';
} catch {
  /* no storage: typed each time */
}
$('api-key').addEventListener('change', () => {
  try {
    sessionStorage.setItem('motive-console-key', $('api-key').value.trim());
  } catch {
    /* not kept */
  }
});

function renderJoin() {
  const s = currentSession();
  const playing = ui.play && ui.play.session === ui.route.id;
  $('join').hidden = Boolean(playing);
  $('composer-box').hidden = !playing;
  if (playing) return;
  const waitingForPeer = s && s.state === 'AWAITING_PEER';
  for (const side of SIDES) {
    const button = $(`join-${side}`);
    const info = s?.sides[side];
    const free = waitingForPeer && info && !info.joined;
    button.textContent = free ? `Answer as ${side}` : `Join as ${side}`;
    button.classList.toggle('primary', Boolean(free));
    button.disabled = Boolean(info?.socket);
    button.title = info?.socket ? `Side ${side} is held by another connection (another tab or client)` : '';
  }
  const held = SIDES.filter((side) => s?.sides[side].socket);
  const ended = ui.playEnded && ui.playEnded.session === ui.route.id ? `${ui.playEnded.text} ` : '';
  let text = '';
  if (held.length) text = `Side ${held.join(' and ')} ${held.length > 1 ? 'are' : 'is'} held by another connection (another tab or client): only one may hold a side.`;
  else if (!s && ui.transcript.closed && ui.transcript.entries.length > 0) text = 'Joining now starts a new session with the same id.';
  else if (!s) text = 'Nobody is in this session yet: joining as A starts it (A’s first message is its handshake, recorded but never forwarded).';
  const note = $('join-note');
  if (note.textContent !== ended + text) note.textContent = ended + text;
}

for (const side of SIDES) $(`join-${side}`).addEventListener('click', () => join(side));

function join(side) {
  const id = ui.route.id;
  if (!id) return;
  leave();
  if (ui.keys && !apiKey()) {
    ui.playEnded = { session: id, text: 'Enter an API key first: this proxy requires one.' };
    renderJoin();
    $('api-key').focus();
    return;
  }
  const key = apiKey();
  // Browsers cannot set headers on a WebSocket: a key goes in the query.
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/realtime?session=${encodeURIComponent(nameOf(id))}&side=${side}${key ? `&key=${encodeURIComponent(key)}` : ''}`;
  const ws = new WebSocket(url);
  const play = { ws, session: id, side, ready: false, pending: null, streamed: '', lastValue: '', awaitingSince: null, otherHeldSeen: false, ended: null, idle: null };
  ui.play = play;
  // A fresh composer for this side; what the person types while the connection opens is kept.
  $('composer-label').textContent = 'Your reply';
  $('composer').value = '';
  ui.playEnded = { session: id, text: `Joining as ${side}…` };
  renderJoin();
  ws.addEventListener('message', (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (ui.play === play) onPlayFrame(play, frame);
  });
  ws.addEventListener('close', () => {
    if (ui.play !== play) return;
    ui.play = null;
    clearTimeout(play.idle);
    const why = play.ended ?? (play.ready ? `You left side ${side}: the connection closed.` : `Could not join as ${side}${ui.keys ? ': is the API key right?' : '.'}`);
    ui.playEnded = { session: id, text: why };
    renderSession();
  });
}

function leave() {
  const play = ui.play;
  if (!play) return;
  ui.play = null;
  clearTimeout(play.idle);
  play.ws.close(1000, 'left');
  $('composer').value = '';
  $('shown-live').hidden = true;
  clearOtherTyping();
}

$('leave').addEventListener('click', () => {
  const play = ui.play;
  leave();
  if (play) ui.playEnded = { session: play.session, text: `You left side ${play.side}.` };
  renderSession();
  $(`join-${play?.side ?? 'A'}`).focus();
});

function onPlayFrame(play, frame) {
  switch (frame.type) {
    case 'ready':
      play.ready = true;
      ui.playEnded = null;
      $('composer-label').textContent = `Your reply as ${play.side}`;
      renderSession();
      $('composer').focus();
      break;
    case 'accepted':
      if (play.pending && frame.id === play.pending.id) {
        play.pending = null;
        play.awaitingSince = serverNow();
        $('send').disabled = false;
      }
      renderPlayStatus();
      break;
    case 'delivery':
      play.awaitingSince = null;
      clearOtherTyping();
      renderPlayStatus();
      // Read out what arrived; the status line takes over again at the next change.
      $('play-announce').textContent = `${other(play.side)} says: ${frame.content}`;
      break;
    case 'typing':
      showOtherTyping(frame.delta);
      break;
    case 'error':
      if (!play.ready) {
        // Refused before joining (the side is held by another tab, a bad session id, …).
        play.ended = frame.message;
        return;
      }
      if (play.pending && frame.id === play.pending.id) {
        // Not taken: the text comes back to the box, as it was.
        $('composer').value = play.pending.text;
        play.streamed = play.pending.streamed;
        play.lastValue = play.pending.text;
        play.pending = null;
        $('send').disabled = false;
      }
      playMessage(frame.message);
      if (frame.code === 'superseded') play.ended = frame.message;
      break;
    case 'closed':
      play.ended = frame.reason === 'session_closed' ? 'The session ended.' : frame.message;
      break;
  }
}

function playMessage(text) {
  playNotice = text;
  renderPlayStatus();
}

/**
 * What the person should know right now: whose turn it is, and for how long. The visible line
 * ticks every second; screen readers hear it only when its meaning changes (no timers read out).
 */
function renderPlayStatus() {
  const play = ui.play;
  const el = $('play-status');
  if (!play || !play.ready) return;
  const s = ui.sessions.get(play.session);
  const me = play.side;
  const them = other(me);
  const peer = s?.sides[them];
  let text = '';
  let spoken = '';
  let warn = false;
  const now = serverNow();
  if (play.pending) {
    text = spoken = 'Sending…';
  } else if (!s) {
    text = spoken = me === 'A' ? 'Your first message as A starts the session: it is the handshake, recorded but never forwarded.' : `Your first message opens side ${me}.`;
  } else if (!peer.joined) {
    text = spoken = me === 'A' && !s.sides.A.joined ? 'Your first message as A is the handshake: recorded, never forwarded.' : `Waiting for someone to join as ${them}.`;
  } else if (peer.held) {
    play.otherHeldSeen = true;
    spoken = `${them} is waiting for your reply.`;
    if (peer.held.deadline == null) {
      text = `${them} is waiting for your reply (for ${duration(now - peer.held.since)}).`;
    } else {
      const left = peer.held.deadline - now;
      const total = peer.held.deadline - peer.held.since;
      warn = left < Math.max(10_000, total * 0.25);
      if (left <= 0) {
        text = spoken = `${them} has waited too long: its request is timing out. Your reply is kept for its retry.`;
      } else {
        text = `${them} is waiting for your reply: ${duration(now - peer.held.since)} so far, ${duration(left)} left before its request times out.`;
        if (warn) {
          text = `${them} has been waiting a long time: ${duration(left)} left before its request times out. Answer soon.`;
          spoken = `${them} has been waiting a long time: answer soon.`;
        }
      }
    }
  } else if (peer.queued > 0) {
    text = spoken = `Your message is queued for ${them}: it gets it with its next request.`;
  } else if (play.awaitingSince !== null) {
    text = `${them} is thinking… ${duration(now - play.awaitingSince)}`;
    spoken = `${them} is thinking.`;
  } else if (play.otherHeldSeen) {
    text = spoken = `${them} stopped waiting (its request timed out or went away). What you send is kept for its next request.`;
    warn = true;
  } else {
    text = spoken = `${them} is not waiting right now: what you send is kept for its next request.`;
  }
  if (playNotice) {
    text = `${playNotice} ${text}`;
    spoken = `${playNotice} ${spoken}`;
  }
  if (el.textContent !== text) el.textContent = text;
  const announce = $('play-announce');
  if (announce.textContent !== spoken) announce.textContent = spoken;
  el.classList.toggle('warn', warn);
  $('composer-box').classList.toggle('their-turn', Boolean(peer?.held));
}

function showOtherTyping(delta) {
  const el = $('other-typing');
  el.dataset.text = (el.dataset.text ?? '') + delta;
  el.textContent = `${other(ui.play.side)} is typing: ${el.dataset.text}`;
  el.hidden = false;
}

function clearOtherTyping() {
  const el = $('other-typing');
  el.dataset.text = '';
  el.textContent = '';
  el.hidden = true;
}

// The composer. What is typed may be shown live to the other side (typing deltas), which
// cannot be taken back: only complete words are streamed (the word being typed can still be
// corrected), the rest after a pause, and text already shown can be added to but not changed.
const composer = $('composer');

function otherIsWatching() {
  const play = ui.play;
  const s = play && ui.sessions.get(play.session);
  return Boolean(s && s.sides[other(play.side)].held);
}

function stream(all) {
  const play = ui.play;
  if (!play || !play.ready || play.pending || !$('stream-toggle').checked || !otherIsWatching()) return;
  const value = composer.value;
  let upto = value.length;
  if (!all) {
    const m = /\s(?=\S*$)/.exec(value);
    upto = m ? m.index + 1 : 0;
  }
  if (upto <= play.streamed.length || !value.startsWith(play.streamed)) return;
  const delta = value.slice(play.streamed.length, upto);
  play.ws.send(JSON.stringify({ type: 'typing', delta }));
  play.streamed = value.slice(0, upto);
  const shown = $('shown-live');
  shown.textContent = `Sent live to ${other(play.side)}: “${play.streamed.length > 80 ? `…${play.streamed.slice(-80)}` : play.streamed}”`;
  shown.hidden = false;
}

composer.addEventListener('beforeinput', (event) => {
  const play = ui.play;
  if (!play || play.streamed === '') return;
  const start = composer.selectionStart;
  const collapsedDelete = event.inputType.startsWith('delete') && start === composer.selectionEnd;
  const from = collapsedDelete && event.inputType.includes('Backward') ? start - 1 : start;
  if (from < play.streamed.length) {
    event.preventDefault();
    playMessage(`${other(play.side)} has already seen the start live: you can add to it, not change it.`);
  }
});

composer.addEventListener('input', () => {
  const play = ui.play;
  if (!play) return;
  if (!composer.value.startsWith(play.streamed)) {
    composer.value = play.lastValue;
    return;
  }
  play.lastValue = composer.value;
  if (playNotice) {
    playNotice = '';
    renderPlayStatus();
  }
  stream(false);
  clearTimeout(play.idle);
  play.idle = setTimeout(() => stream(true), 1500);
});

composer.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});

$('send').addEventListener('click', send);

function send() {
  const play = ui.play;
  if (!play || !play.ready || play.pending) return;
  const value = composer.value;
  if (value.trim() === '') {
    playMessage('Type something first.');
    return;
  }
  clearTimeout(play.idle);
  const id = `m${Date.now().toString(36)}`;
  // Everything already shown live is sent by the server as the start of this message.
  const content = value.startsWith(play.streamed) ? value.slice(play.streamed.length) : value;
  play.pending = { id, text: value, streamed: play.streamed };
  play.ws.send(JSON.stringify({ type: 'message', content, id }));
  play.streamed = '';
  play.lastValue = '';
  playNotice = '';
  composer.value = '';
  $('shown-live').hidden = true;
  $('send').disabled = true;
  renderPlayStatus();
}

// ---------------------------------------------------------------- start

/**
 * Who this page is shown to (GET /console/me): with sign-in configured, a person who is not
 * signed in (and not on this machine) gets the sign-in view only; a signed-in person sees their
 * name, tenant and roles in the bar, and a Sign out button.
 */
async function whoAmI() {
  const me = await fetch('/console/me')
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null);
  const error = new URLSearchParams(location.search).get('signin_error');
  if (error) history.replaceState(null, '', location.pathname + location.hash);
  if (!me?.signin) return true;
  if (me.signed_in) {
    const roles = me.roles.length ? me.roles.join(', ') : 'no admin role';
    $('whoami-text').textContent = `${me.subject} · ${me.tenant ?? 'default tenant'} · ${roles}`;
    $('whoami').hidden = false;
    return true;
  }
  $('signin-error').textContent = error ?? '';
  $('signin-error').hidden = !error;
  if (me.local && !error) {
    $('signin-offer').hidden = false;
    return true;
  }
  for (const id of ['sessions-view', 'conversation-view', 'keys-view', 'webhooks-view', 'api-view']) $(id).hidden = true;
  document.querySelector('.bar-nav').hidden = true;
  $('signin-view').hidden = false;
  $('feed-status').hidden = true;
  return false;
}

$('signout').addEventListener('click', async () => {
  await fetch('/console/logout', { method: 'POST' }).catch(() => null);
  location.href = '/';
});

async function start() {
  if (!(await whoAmI())) return;
  try {
    const response = await fetch('/console/chart.json');
    ui.chart = await response.json();
    ui.chartOrder = layout(ui.chart).order;
  } catch {
    ui.chart = null;
  }
  route();
  connectFeed();
  setInterval(tick, 1000);
}

start();
