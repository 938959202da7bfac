// The console's admin views: managed API keys (#/keys: create, list, rotate, revoke), webhook
// endpoints (#/webhooks: add, list, enable or disable, rotate, delete, send a test event, their
// latest attempts and "send again"), bridges (#/bridges: each bridge's health, its conversations,
// ending one) and the admin API's OpenAPI description (#/api), all through the admin routes with
// the admin key the person enters (none is needed on this machine when the proxy has no admin
// key). Whatever the server, a receiver or a bridge's peer supplies is inserted as text.
import { $, node, storeAdminKey, storedAdminKey } from './dom.js';

const SCOPES = ['client', 'viewer', 'operator', 'admin', 'global:viewer', 'global:operator', 'global:admin'];
const LIMITS = [
  ['requests_per_minute', 'Requests a minute'],
  ['new_sessions_per_minute', 'New sessions a minute'],
  ['max_held', 'Held at once'],
  ['max_live_sessions', 'Live sessions'],
];

let shown = null;

const LOADERS = { keys: () => loadKeys(), webhooks: () => loadWebhooks(), bridges: () => loadBridges(), api: () => loadApi() };

/** Shows the admin view `name` ('keys', 'webhooks', 'bridges', 'api'), or hides them all (null). */
export function showAdminView(name) {
  for (const view of Object.keys(LOADERS)) $(`${view}-view`).hidden = name !== view;
  if (name === shown) return;
  shown = name;
  pollBridges(name === 'bridges');
  if (name) void LOADERS[name]();
}

/** A request to an admin route with the entered admin key; the parsed answer and its status. */
async function admin(path, { method = 'GET', body } = {}) {
  const key = storedAdminKey();
  const headers = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
  const response = await fetch(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }).catch(() => null);
  if (!response) return { status: 0, body: { error: { message: 'The proxy cannot be reached.' } } };
  const text = await response.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { error: { message: text } };
  }
  return { status: response.status, body: parsed };
}

/** Shows `message` in a view's notice line (empty hides it). */
function say(id, message) {
  const el = $(id);
  el.textContent = message;
  el.hidden = !message;
}

/** A refused admin request: asks for the admin key, or says what went wrong. */
function refused(view, answer) {
  if (answer.status === 401 || answer.status === 404) {
    $(`${view}-key-box`).hidden = false;
    say(`${view}-notice`, answer.status === 401 && storedAdminKey() ? 'That key is not the admin key.' : 'This proxy guards its admin routes with its admin key: enter it above.');
    return;
  }
  say(`${view}-notice`, answer.body?.error?.message ?? `The proxy answered ${answer.status}.`);
}

for (const view of Object.keys(LOADERS)) {
  $(`${view}-key-box`).addEventListener('submit', (event) => {
    event.preventDefault();
    storeAdminKey($(`${view}-admin-key`).value.trim());
    $(`${view}-key-box`).hidden = true;
    say(`${view}-notice`, '');
    void LOADERS[view]();
  });
}

// ---------------------------------------------------------------- keys

const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) : '—');

async function loadKeys() {
  const answer = await admin('/admin/keys');
  if (answer.status !== 200) {
    $('keys-table').hidden = true;
    return refused('keys', answer);
  }
  $('keys-key-box').hidden = true;
  renderKeys(answer.body.data);
}

function renderKeys(keys) {
  $('keys-empty').hidden = keys.length > 0;
  $('keys-table').hidden = keys.length === 0;
  $('keys-body').replaceChildren(
    ...keys.map((k) => {
      const active = k.status === 'active';
      const limits = Object.entries(k.limits ?? {})
        .filter(([, n]) => n > 0)
        .map(([name, n]) => `${name.replace(/_/g, ' ')}: ${n}`)
        .join(', ');
      return node(
        'tr',
        { dataKey: k.id, dataStatus: k.status },
        node('th', { scope: 'row', dataLabel: 'Name' }, node('span', { text: k.name }), node('span', { class: 'muted key-id', text: k.id })),
        node('td', { dataLabel: 'Tenant', text: k.tenant ?? 'default' }),
        node('td', { dataLabel: 'Scopes', text: k.scopes.join(' ') }),
        node('td', { dataLabel: 'Limits', text: limits || '—' }),
        node('td', { dataLabel: 'Status' }, node('span', { class: `badge key-${k.status}`, text: k.status })),
        node('td', { dataLabel: 'Secrets', text: k.secrets.map((s) => (s.expires_at ? `${s.hint} (until ${when(s.expires_at)})` : s.hint)).join(', ') || '—' }),
        node('td', { dataLabel: 'Created', text: `${when(k.created_at)} by ${k.created_by}` }),
        node('td', { dataLabel: 'Expires', text: when(k.expires_at) }),
        node(
          'td',
          { dataLabel: 'Actions', class: 'key-actions' },
          active ? actionButton('Rotate', () => rotate(k)) : null,
          active ? actionButton('Revoke', () => revoke(k), 'danger') : null,
        ),
      );
    }),
  );
}

function actionButton(label, onClick, kind = '') {
  const button = node('button', { type: 'button', class: `button ${kind}`.trim(), text: label });
  button.addEventListener('click', onClick);
  return button;
}

/**
 * The one time a secret is shown: in a box (`new-key` in the keys view, `new-secret` in the
 * webhooks view) with a copy button, until dismissed.
 */
function showSecret(title, secret, box = 'new-key') {
  $(`${box}-title`).textContent = title;
  $(`${box}-value`).value = secret;
  $(`${box}-copy`).textContent = 'Copy';
  $(box).hidden = false;
  $(`${box}-value`).focus();
  $(`${box}-value`).select();
}

for (const box of ['new-key', 'new-secret']) {
  $(`${box}-copy`).addEventListener('click', async () => {
    await navigator.clipboard?.writeText($(`${box}-value`).value).catch(() => undefined);
    $(`${box}-copy`).textContent = 'Copied';
  });
  $(`${box}-done`).addEventListener('click', () => {
    $(box).hidden = true;
    $(`${box}-value`).value = '';
    $(`${box}-copy`).textContent = 'Copy';
  });
}

$('key-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const data = new FormData(form);
  const body = { name: String(data.get('name') ?? '').trim() };
  const tenant = String(data.get('tenant') ?? '').trim();
  if (tenant) body.tenant = tenant;
  const scopes = data.getAll('scopes').map(String);
  if (scopes.length) body.scopes = scopes;
  const days = Number(data.get('expires_days'));
  if (days > 0) body.expires_in_seconds = Math.round(days * 86_400);
  const limits = {};
  for (const [name] of LIMITS) {
    const n = Number(data.get(name));
    if (n > 0) limits[name] = n;
  }
  if (Object.keys(limits).length) body.limits = limits;
  const answer = await admin('/admin/keys', { method: 'POST', body });
  if (answer.status !== 201) return refused('keys', answer);
  say('keys-notice', answer.body.warning ?? '');
  showSecret(`Key “${answer.body.name}” (${answer.body.id}): copy it now, it is not shown again`, answer.body.key);
  form.reset();
  for (const box of form.querySelectorAll('input[name="scopes"][value="client"]')) box.checked = true;
  await loadKeys();
});

async function rotate(key) {
  const hours = prompt(`Rotate “${key.name}”: for how many hours should the current secret keep working beside the new one?`, '1');
  if (hours === null) return;
  const overlap = Math.max(0, Math.round(Number(hours) * 3600)) || 0;
  const answer = await admin(`/admin/keys/${encodeURIComponent(key.id)}/rotate`, { method: 'POST', body: { overlap_seconds: overlap } });
  if (answer.status !== 200) return refused('keys', answer);
  showSecret(`New secret of “${key.name}” (${key.id}): copy it now, it is not shown again`, answer.body.key);
  await loadKeys();
}

async function revoke(key) {
  if (!confirm(`Revoke “${key.name}” (${key.id})? Requests with it are refused from now on, on every instance.`)) return;
  const answer = await admin(`/admin/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' });
  if (answer.status !== 200) return refused('keys', answer);
  say('keys-notice', `“${key.name}” is revoked.`);
  await loadKeys();
}

function buildKeyForm() {
  $('scope-choices').replaceChildren(
    ...SCOPES.map((scope) => node('label', { class: 'check' }, node('input', { type: 'checkbox', name: 'scopes', value: scope, checked: scope === 'client' }), ` ${scope}`)),
  );
  $('limit-fields').replaceChildren(
    ...LIMITS.map(([name, label]) => node('label', { class: 'field' }, node('span', { text: label }), node('input', { type: 'number', name, min: '0', step: '1', inputmode: 'numeric', placeholder: 'none' }))),
  );
}
buildKeyForm();

// ---------------------------------------------------------------- webhooks

const webhooks = {
  /** The endpoints as last listed. */
  list: [],
  /** The endpoint whose attempts are shown, or null. */
  selected: null,
  /** The event catalogue, once read. */
  types: null,
};

const whenExact = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' }) : '—');

/**
 * A refused webhook request. A 404 that names a parameter is about the endpoint or event (gone
 * meanwhile); any other 401 or 404 is the admin routes' guard asking for the admin key.
 */
function webhookRefused(answer, where = 'webhooks-notice') {
  if (answer.status === 404 && answer.body?.error?.param) {
    say(where, answer.body.error.message);
    void loadWebhooks();
    return;
  }
  if (answer.status === 401 || answer.status === 404) return refused('webhooks', answer);
  say(where, answer.body?.error?.message ?? `The proxy answered ${answer.status}.`);
}

async function loadWebhooks() {
  if (webhooks.types === null) void loadEventTypes();
  const answer = await admin('/admin/webhooks');
  if (answer.status !== 200) {
    $('webhooks-table').hidden = true;
    $('webhook-attempts').hidden = true;
    return webhookRefused(answer);
  }
  $('webhooks-key-box').hidden = true;
  const { data, sending, pending } = answer.body;
  $('webhooks-sender').textContent = sending
    ? `This instance sends the events${pending ? `: ${pending} waiting` : ''}.`
    : 'Another instance holds the sender lease and sends the events; everything on this page works from any instance.';
  webhooks.list = data;
  if (webhooks.selected && !data.some((e) => e.id === webhooks.selected)) webhooks.selected = null;
  renderWebhooks();
  if (webhooks.selected) await loadAttempts();
  else $('webhook-attempts').hidden = true;
}

/** The event catalogue: buttons that add a type (or a family of them) to the form's types. */
async function loadEventTypes() {
  webhooks.types = [];
  const answer = await admin('/admin/events/types');
  if (answer.status !== 200) {
    webhooks.types = null;
    return;
  }
  webhooks.types = answer.body.data;
  const families = [...new Set(webhooks.types.map((t) => t.type.split('.')[0]))];
  const choice = (pattern, title) => {
    const button = node('button', { type: 'button', class: 'chip', text: pattern, title, dataPattern: pattern });
    button.addEventListener('click', () => {
      const input = $('webhook-types');
      const current = input.value.split(/[\s,]+/).filter(Boolean);
      if (!current.includes(pattern)) input.value = [...current, pattern].join(' ');
      input.focus();
    });
    return button;
  };
  $('webhook-type-choices').replaceChildren(
    choice('*', 'every event'),
    ...families.map((family) => choice(`${family}.*`, `every ${family} event`)),
    ...webhooks.types.map((t) => choice(t.type, t.dataschema)),
  );
}

function renderWebhooks() {
  const list = webhooks.list;
  $('webhooks-empty').hidden = list.length > 0;
  $('webhooks-table').hidden = list.length === 0;
  $('webhooks-body').replaceChildren(
    ...list.map((e) => {
      const toggle = node('input', { type: 'checkbox', role: 'switch', checked: e.enabled, 'aria-label': `Enabled: ${e.url}` });
      toggle.addEventListener('change', () => setEnabled(e, toggle));
      // One element per cell: on a narrow screen each cell is a label and its content, side by side.
      const status = e.enabled
        ? node('td', { dataLabel: 'Status' }, node('div', {}, node('span', { class: 'badge webhook-enabled', text: 'enabled' })))
        : node(
            'td',
            { dataLabel: 'Status' },
            node(
              'div',
              {},
              node('span', { class: 'badge webhook-disabled', text: 'disabled' }),
              node('span', { class: 'disabled-reason', text: e.disabled?.reason ?? '' }),
              e.disabled ? node('span', { class: 'muted disabled-at', text: whenExact(e.disabled.at) }) : null,
            ),
          );
      const test = actionButton('Send a test event', () => sendTest(e));
      if (!e.enabled) {
        test.disabled = true;
        test.title = 'Enable the endpoint first';
      }
      const attempts = actionButton('Attempts', () => select(e.id), 'subtle');
      attempts.setAttribute('aria-pressed', String(webhooks.selected === e.id));
      return node(
        'tr',
        { dataEndpoint: e.id, dataEnabled: String(e.enabled), class: webhooks.selected === e.id ? 'selected' : null },
        node(
          'th',
          { scope: 'row', dataLabel: 'URL' },
          node(
            'div',
            {},
            node('span', { class: 'webhook-url', text: e.url }),
            e.description ? node('span', { class: 'webhook-description', text: e.description }) : null,
            node('span', { class: 'muted key-id', text: `${e.id} · ${e.tenant === null ? 'every tenant' : `tenant ${e.tenant}`} · since ${when(e.created)}` }),
          ),
        ),
        node('td', { dataLabel: 'Types', text: e.types.join(' ') }),
        node('td', { dataLabel: 'Content', text: e.include_content ? 'yes' : 'no' }),
        status,
        node('td', { dataLabel: 'Secrets', text: e.secrets.map((s) => (s.expires ? `previous, until ${when(s.expires)}` : `current, from ${when(s.created)}`)).join('; ') || '—' }),
        node(
          'td',
          { dataLabel: 'Actions' },
          node(
            'div',
            { class: 'webhook-actions' },
            node('label', { class: 'check switch' }, toggle, ' Enabled'),
            attempts,
            test,
            actionButton('Rotate secret', () => rotateWebhook(e)),
            actionButton('Delete', () => deleteWebhook(e), 'danger'),
          ),
        ),
      );
    }),
  );
}

async function setEnabled(endpoint, toggle) {
  toggle.disabled = true;
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}`, { method: 'PATCH', body: { enabled: toggle.checked } });
  if (answer.status !== 200) {
    toggle.checked = !toggle.checked;
    toggle.disabled = false;
    return webhookRefused(answer);
  }
  say('webhooks-notice', answer.body.enabled ? `${endpoint.url} is enabled: events that happen from now on are sent to it.` : `${endpoint.url} is disabled: nothing is sent to it until it is enabled again.`);
  await loadWebhooks();
}

async function select(id) {
  webhooks.selected = id;
  renderWebhooks();
  await loadAttempts();
  $('webhook-attempts').scrollIntoView?.({ block: 'nearest' });
}

async function loadAttempts() {
  const endpoint = webhooks.list.find((e) => e.id === webhooks.selected);
  if (!endpoint) {
    $('webhook-attempts').hidden = true;
    return;
  }
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}/attempts?limit=50`);
  if (answer.status !== 200) return webhookRefused(answer);
  $('webhook-attempts-url').textContent = endpoint.url;
  $('webhook-attempts').hidden = false;
  $('webhook-attempts').dataset.endpoint = endpoint.id;
  renderAttempts(endpoint, answer.body.data);
}

/** What each outcome means, as the outcome's tooltip. */
const OUTCOMES = {
  delivered: 'the receiver answered 2xx',
  failed: 'no 2xx answer: an event sent as it happened is tried again later; a test or a send again is not',
  gave_up: 'still failing when its retry time ran out: not tried again',
  dropped: 'the receiver answered 410 Gone: the endpoint was disabled and the event is not tried again',
};

function renderAttempts(endpoint, attempts) {
  $('webhook-attempts-empty').hidden = attempts.length > 0;
  $('webhook-attempts-table').hidden = attempts.length === 0;
  $('webhook-attempts-body').replaceChildren(
    ...attempts.map((a) => {
      const again = actionButton('Send again', () => resend(endpoint, a));
      if (!endpoint.enabled) {
        again.disabled = true;
        again.title = 'Enable the endpoint first';
      }
      return node(
        'tr',
        { dataEvent: a.event, dataOutcome: a.outcome },
        node('td', { dataLabel: 'Time', text: whenExact(a.at) }),
        node('td', { dataLabel: 'Event type', text: a.type }),
        node('td', { dataLabel: 'Event id' }, node('code', { class: 'event-id', text: a.event })),
        node('td', { dataLabel: 'Attempt', text: `${a.attempt}${a.manual ? ' (manual)' : ''}` }),
        node('td', { dataLabel: 'Status', text: a.status === null ? 'no answer' : String(a.status) }),
        node('td', { dataLabel: 'Time taken', text: `${a.ms} ms` }),
        node('td', { dataLabel: 'Error', class: 'attempt-error', text: a.error ?? '' }),
        node('td', { dataLabel: 'Outcome' }, node('div', {}, node('span', { class: `badge outcome-${a.outcome}`, title: OUTCOMES[a.outcome] ?? '', text: a.outcome.replace('_', ' ') }))),
        node('td', { dataLabel: 'Actions', class: 'key-actions' }, node('div', {}, again)),
      );
    }),
  );
}

/** Says how one manual attempt went. */
function attemptNotice(what, attempt) {
  const answered = attempt.status === null ? 'no answer' : `answered ${attempt.status}`;
  return `${what}: ${attempt.outcome.replace('_', ' ')} (${answered}, ${attempt.ms} ms)${attempt.error ? `: ${attempt.error}` : ''}.`;
}

async function sendTest(endpoint) {
  say('webhooks-notice', `Sending a test event to ${endpoint.url}…`);
  webhooks.selected = endpoint.id;
  renderWebhooks();
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}/test`, { method: 'POST', body: {} });
  if (answer.status !== 200) return webhookRefused(answer);
  say('webhooks-notice', attemptNotice(`Test event ${answer.body.event}`, answer.body));
  await loadAttempts();
}

async function resend(endpoint, attempt) {
  say('webhooks-notice', `Sending ${attempt.event} again…`);
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}/events/${encodeURIComponent(attempt.event)}/resend`, { method: 'POST', body: {} });
  if (answer.status !== 200) return webhookRefused(answer);
  say('webhooks-notice', attemptNotice(`${attempt.event} sent again`, answer.body));
  await loadAttempts();
}

async function rotateWebhook(endpoint) {
  const hours = prompt(`Rotate the secret of ${endpoint.url}: for how many hours should the current secret keep signing beside the new one?`, '1');
  if (hours === null) return;
  const overlap = Math.min(30 * 24 * 3600, Math.max(0, Math.round(Number(hours) * 3600)) || 0);
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}/rotate`, { method: 'POST', body: { overlap_seconds: overlap } });
  if (answer.status !== 200) return webhookRefused(answer);
  showSecret(`New signing secret of ${endpoint.url} (${endpoint.id}): copy it now, it is not shown again`, answer.body.secret, 'new-secret');
  await loadWebhooks();
}

async function deleteWebhook(endpoint) {
  if (!confirm(`Delete the webhook endpoint ${endpoint.url} (${endpoint.id})? Nothing more is sent to it, on every instance.`)) return;
  const answer = await admin(`/admin/webhooks/${encodeURIComponent(endpoint.id)}`, { method: 'DELETE' });
  if (answer.status !== 200) return webhookRefused(answer);
  if (webhooks.selected === endpoint.id) webhooks.selected = null;
  say('webhooks-notice', `${endpoint.url} is deleted.`);
  await loadWebhooks();
}

$('webhook-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const data = new FormData(form);
  const body = { url: String(data.get('url') ?? '').trim() };
  const types = String(data.get('types') ?? '')
    .split(/[\s,]+/)
    .filter(Boolean);
  if (types.length) body.types = types;
  if (data.get('include_content') !== null) body.include_content = true;
  const description = String(data.get('description') ?? '').trim();
  if (description) body.description = description;
  say('webhook-form-error', '');
  const answer = await admin('/admin/webhooks', { method: 'POST', body });
  if (answer.status !== 201) return webhookRefused(answer, 'webhook-form-error');
  say('webhooks-notice', answer.body.warning_durability ?? '');
  showSecret(`Signing secret of ${answer.body.url} (${answer.body.id}): copy it now, it is not shown again`, answer.body.secret, 'new-secret');
  form.reset();
  webhooks.selected = answer.body.id;
  await loadWebhooks();
});

$('webhook-attempts-refresh').addEventListener('click', () => void loadWebhooks());

// ---------------------------------------------------------------- bridges

/**
 * A bridge's health and queue change without anything the page does (a mailbox drops, a send
 * fails and is retried), so the view reads its lists again on this period while it is shown.
 */
const BRIDGES_EVERY_MS = 5_000;

const bridgeView = {
  timer: null,
  /** Counts loads, so that a slow answer never replaces a newer one (a filter changed meanwhile). */
  seq: 0,
  loading: false,
  /** What was last drawn: an answer that has not changed is not drawn again (a selection or focus in the tables stays). */
  drawn: '',
  /** Whether the notice line holds a failed load's message, to be cleared by the next good one. */
  failing: false,
};

/** Starts or stops reading the bridges view again every few seconds. */
function pollBridges(on) {
  clearInterval(bridgeView.timer);
  bridgeView.timer = null;
  if (!on) return;
  bridgeView.timer = setInterval(() => {
    // Not while the page waits for the admin key (each read would only be refused again), nor
    // while the tab is in the background, nor on top of a read still under way.
    if (bridgeView.loading || document.hidden || !$('bridges-key-box').hidden) return;
    void loadBridges();
  }, BRIDGES_EVERY_MS);
}

/** A session's id as the console's routes name it: the name, after its tenant's and U+001F when it has one. */
const sessionIdOf = (c) => (c.tenant ? `${c.tenant}\u001f${c.session}` : c.session);
/** A session as people read it: `tenant/name`, or the name in the default tenant. */
const sessionLabel = (c) => (c.tenant ? `${c.tenant}/${c.session}` : c.session);

/**
 * A refused request: the admin key is asked for, or what went wrong is said. A 404 that names a
 * parameter is about the conversation (gone meanwhile), not the admin routes' guard.
 */
function bridgeRefused(answer) {
  if (answer.status === 404 && answer.body?.error?.param) {
    say('bridges-notice', answer.body.error.message);
    void loadBridges();
    return;
  }
  refused('bridges', answer);
}

/** A read that failed: nothing stale stays on the page, and the next good read clears the message. */
function loadFailed(answer) {
  $('bridges-table').hidden = true;
  $('bridge-conversations').hidden = true;
  $('bridges-empty').hidden = true;
  bridgeView.drawn = '';
  bridgeView.failing = !(answer.status === 401 || answer.status === 404);
  refused('bridges', answer);
}

async function loadBridges() {
  const seq = ++bridgeView.seq;
  bridgeView.loading = true;
  const state = $('bridge-conversations-state').value;
  const [health, conversations] = await Promise.all([admin('/admin/bridges'), admin(`/admin/bridges/conversations?state=${encodeURIComponent(state)}`)]).finally(() => {
    if (seq === bridgeView.seq) bridgeView.loading = false;
  });
  if (seq !== bridgeView.seq) return;
  if (health.status !== 200) return loadFailed(health);
  if (conversations.status !== 200) return loadFailed(conversations);
  $('bridges-key-box').hidden = true;
  if (bridgeView.failing) {
    bridgeView.failing = false;
    say('bridges-notice', '');
  }
  const drawn = JSON.stringify([state, health.body, conversations.body]);
  if (drawn === bridgeView.drawn) return;
  bridgeView.drawn = drawn;
  renderBridges(health.body);
  renderConversations(conversations.body.data, state);
}

/**
 * What a bridge adds about itself (the SMTP listener, the mailbox, the bot, SMS status counts),
 * on one line: scalars as they are, a table of counts as `name n` pairs.
 */
function detailsText(details) {
  const value = (v) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.entries(v)
          .filter(([, n]) => typeof n !== 'object')
          .map(([k, n]) => `${k} ${n}`)
          .join(', ') || null
      : typeof v === 'object' ? null : String(v);
  return Object.entries(details ?? {})
    .map(([k, v]) => [k, value(v)])
    .filter(([, v]) => v !== null)
    .map(([k, v]) => `${k.replace(/_/g, ' ')}: ${v}`)
    .join(' · ');
}

function renderBridges({ data, note }) {
  // No bridge configured: the API says so and where to read how; there are no conversations either.
  $('bridges-empty').textContent = note ?? 'No bridge is configured.';
  $('bridges-empty').hidden = data.length > 0;
  $('bridges-table').hidden = data.length === 0;
  $('bridge-conversations').hidden = data.length === 0;
  $('bridges-body').replaceChildren(
    ...data.map((b) => {
      // On a cluster instance that does not run the bridges (and none does this moment), only where they run is known.
      const standby = 'running_on' in b;
      const details = detailsText(b.details);
      return node(
        'tr',
        { dataBridge: b.bridge, dataConnected: String(b.connected) },
        node('th', { scope: 'row', dataLabel: 'Bridge' }, node('div', {}, node('span', { text: b.bridge }), details ? node('span', { class: 'muted bridge-details', text: details }) : null)),
        node(
          'td',
          { dataLabel: 'Status' },
          node(
            'div',
            {},
            node('span', { class: `badge bridge-${b.connected ? 'connected' : 'disconnected'}`, text: b.connected ? 'connected' : 'disconnected' }),
            standby ? node('span', { class: 'muted bridge-standby', text: b.running_on ? `runs on instance ${b.running_on}` : 'no instance runs the bridges this moment' }) : null,
          ),
        ),
        node(
          'td',
          { dataLabel: 'Last error' },
          node('div', {}, node('span', { class: 'bridge-error', text: b.last_error ?? '—' }), b.last_error_at ? node('span', { class: 'muted bridge-error-at', text: whenExact(b.last_error_at) }) : null),
        ),
        node('td', { dataLabel: 'Queue depth', text: standby ? '—' : String(b.queue_depth) }),
        node('td', { dataLabel: 'Open conversations', text: standby ? '—' : String(b.conversations) }),
      );
    }),
  );
}

const EMPTY_CONVERSATIONS = {
  open: 'No open conversations. One opens when a person writes to a bridge (docs/bridges.md).',
  ended: 'No ended conversations.',
  all: 'No conversations yet.',
};

function renderConversations(list, state) {
  const body = $('bridge-conversations-body');
  // The table is drawn anew on each read: keep the keyboard where it was (the same row's link or button).
  const focused = document.activeElement;
  const focusedRow = body.contains(focused) ? focused.closest('tr')?.dataset.conversation : undefined;
  const focusedWhat = focused?.tagName === 'A' ? 'a' : 'button';
  $('bridge-conversations-empty').textContent = EMPTY_CONVERSATIONS[state] ?? EMPTY_CONVERSATIONS.all;
  $('bridge-conversations-empty').hidden = list.length > 0;
  $('bridge-conversations-table').hidden = list.length === 0;
  body.replaceChildren(
    ...list.map((c) => {
      const open = c.ended === null;
      const status = open
        ? node(
            'div',
            {},
            node('span', { class: 'badge conversation-open', text: 'open' }),
            // Its side reconnects by itself (a restart, the session moving); this says it is not there now.
            c.connected ? null : node('span', { class: 'muted', text: 'not connected to the session now' }),
          )
        : node(
            'div',
            {},
            node('span', { class: 'badge conversation-ended', text: 'ended' }),
            node('span', { class: 'muted', text: whenExact(c.ended) }),
            c.ended_because ? node('span', { class: 'ended-because', text: c.ended_because }) : null,
          );
      const error = c.last_error
        ? node(
            'div',
            {},
            node('span', { class: 'conversation-error', text: c.last_error }),
            node('span', { class: 'muted', text: `${c.attempts} attempt${c.attempts === 1 ? '' : 's'}${c.next_attempt ? `; next ${whenExact(c.next_attempt)}` : ''}` }),
          )
        : node('div', {}, node('span', { class: 'muted', text: '—' }));
      return node(
        'tr',
        { dataConversation: c.id, dataState: open ? 'open' : 'ended' },
        node('th', { scope: 'row', dataLabel: 'Bridge' }, node('div', {}, node('span', { text: c.bridge }), node('span', { class: 'muted key-id', text: c.id }))),
        node('td', { dataLabel: 'Session' }, node('a', { href: `#/s/${encodeURIComponent(sessionIdOf(c))}`, class: 'session-link', text: sessionLabel(c) })),
        node('td', { dataLabel: 'Side', text: c.side }),
        node('td', { dataLabel: 'Peer' }, node('span', { class: 'bridge-peer', text: c.peer })),
        node('td', { dataLabel: 'Opened', text: whenExact(c.opened) }),
        node('td', { dataLabel: 'Received', title: 'Deliveries of the session to this side, taken into the queue', text: String(c.deliveries_received) }),
        node('td', { dataLabel: 'Sent', title: 'Deliveries the bridge’s service accepted', text: String(c.deliveries_sent) }),
        node('td', { dataLabel: 'Queue depth', text: String(c.queue_depth) }),
        node('td', { dataLabel: 'Last error', class: 'conversation-error-cell' }, error),
        node('td', { dataLabel: 'State' }, status),
        node('td', { dataLabel: 'Actions', class: 'key-actions' }, open ? node('div', {}, actionButton('End', () => endConversation(c), 'danger')) : null),
      );
    }),
  );
  if (focusedRow !== undefined) body.querySelector(`tr[data-conversation="${CSS.escape(focusedRow)}"] ${focusedWhat}`)?.focus();
}

async function endConversation(c) {
  const owed = c.queue_depth > 0 ? ` The ${c.queue_depth} ${c.queue_depth === 1 ? 'delivery' : 'deliveries'} it still owes ${c.queue_depth === 1 ? 'is' : 'are'} sent first.` : '';
  if (!confirm(`End the ${c.bridge} conversation with ${c.peer} (session ${sessionLabel(c)}, side ${c.side})? The bridge stops playing the side.${owed}`)) return;
  const answer = await admin(`/admin/bridges/conversations/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
  if (answer.status !== 200) return bridgeRefused(answer);
  say('bridges-notice', `The ${c.bridge} conversation with ${c.peer} (session ${sessionLabel(c)}) is ended.`);
  await loadBridges();
}

$('bridge-conversations-state').addEventListener('change', () => void loadBridges());

// ---------------------------------------------------------------- the admin API

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

async function loadApi() {
  const answer = await admin('/admin/openapi.json');
  if (answer.status !== 200) return refused('api', answer);
  $('api-key-box').hidden = true;
  renderApi(answer.body);
}

function schemaText(schema) {
  return JSON.stringify(schema, null, 2);
}

function renderApi(doc) {
  $('api-intro').textContent = `${doc.info.title} ${doc.info.version} (OpenAPI ${doc.openapi}). ${doc.info.description ?? ''}`;
  const byTag = new Map((doc.tags ?? []).map((t) => [t.name, { tag: t, operations: [] }]));
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] ?? 'other';
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, operations: [] });
      byTag.get(tag).operations.push({ method, path, op });
    }
  }
  $('api-ops').replaceChildren(
    ...[...byTag.values()]
      .filter((group) => group.operations.length)
      .map(({ tag, operations }) =>
        node(
          'section',
          { class: 'api-tag', dataTag: tag.name },
          node('h2', { text: tag.name }),
          tag.description ? node('p', { class: 'hint', text: tag.description }) : null,
          ...operations.map(({ method, path, op }) => operation(method, path, op)),
        ),
      ),
  );
}

function operation(method, path, op) {
  const params = op.parameters ?? [];
  const body = op.requestBody?.content?.['application/json']?.schema;
  return node(
    'details',
    { class: 'api-op', dataOperation: `${method.toUpperCase()} ${path}` },
    node('summary', {}, node('span', { class: `method method-${method}`, text: method.toUpperCase() }), node('code', { text: path }), node('span', { class: 'op-summary', text: op.summary ?? '' })),
    op.description ? node('p', { text: op.description }) : null,
    params.length
      ? node(
          'table',
          { class: 'api-params' },
          node('thead', {}, node('tr', {}, node('th', { text: 'Parameter' }), node('th', { text: 'In' }), node('th', { text: 'Type' }), node('th', { text: 'Description' }))),
          node(
            'tbody',
            {},
            ...params.map((p) =>
              node(
                'tr',
                {},
                node('td', {}, node('code', { text: p.name }), p.required ? node('span', { class: 'muted', text: ' required' }) : null),
                node('td', { text: p.in }),
                node('td', { text: p.schema?.type ?? (p.schema?.enum ? p.schema.enum.join(' | ') : '') }),
                node('td', { text: p.description ?? p.schema?.description ?? '' }),
              ),
            ),
          ),
        )
      : null,
    body ? node('div', { class: 'api-body' }, node('h3', { text: 'Request body' }), node('pre', {}, node('code', { text: schemaText(body) }))) : null,
    node(
      'ul',
      { class: 'api-responses' },
      ...Object.entries(op.responses ?? {}).map(([status, r]) => node('li', {}, node('code', { text: status }), ` ${r.description ?? ''}`)),
    ),
  );
}
