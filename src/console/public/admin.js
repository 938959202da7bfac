// The console's admin views: managed API keys (#/keys: create, list, rotate, revoke) and the
// admin API's OpenAPI description (#/api), both through the admin routes with the admin key the
// person enters (none is needed on this machine when the proxy has no admin key).
import { $, node, storeAdminKey, storedAdminKey } from './dom.js';

const SCOPES = ['client', 'viewer', 'operator', 'admin', 'global:viewer', 'global:operator', 'global:admin'];
const LIMITS = [
  ['requests_per_minute', 'Requests a minute'],
  ['new_sessions_per_minute', 'New sessions a minute'],
  ['max_held', 'Held at once'],
  ['max_live_sessions', 'Live sessions'],
];

let shown = null;

/** Shows the admin view `name` ('keys', 'api'), or hides both (null). */
export function showAdminView(name) {
  $('keys-view').hidden = name !== 'keys';
  $('api-view').hidden = name !== 'api';
  if (name === shown) return;
  shown = name;
  if (name === 'keys') void loadKeys();
  if (name === 'api') void loadApi();
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

for (const view of ['keys', 'api']) {
  $(`${view}-key-box`).addEventListener('submit', (event) => {
    event.preventDefault();
    storeAdminKey($(`${view}-admin-key`).value.trim());
    $(`${view}-key-box`).hidden = true;
    say(`${view}-notice`, '');
    if (view === 'keys') void loadKeys();
    else void loadApi();
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

/** The one time a secret is shown: in a box with a copy button, until dismissed. */
function showSecret(title, secret) {
  $('new-key-title').textContent = title;
  $('new-key-value').value = secret;
  $('new-key').hidden = false;
  $('new-key-value').focus();
  $('new-key-value').select();
}

$('new-key-copy').addEventListener('click', async () => {
  await navigator.clipboard?.writeText($('new-key-value').value).catch(() => undefined);
  $('new-key-copy').textContent = 'Copied';
});
$('new-key-done').addEventListener('click', () => {
  $('new-key').hidden = true;
  $('new-key-value').value = '';
  $('new-key-copy').textContent = 'Copy';
});

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

// ---------------------------------------------------------------- the admin API

const METHODS = ['get', 'post', 'put', 'delete'];

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
