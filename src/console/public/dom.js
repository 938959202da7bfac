// Small DOM helpers the console's modules share.

export const $ = (id) => document.getElementById(id);

/** An element with attributes (`class`, `text`, `dataX` → data-x) and children. */
export function node(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('data')) el.setAttribute(k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), String(v));
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}

/** The admin key the person entered (kept in this tab only), or ''. */
export function storedAdminKey() {
  try {
    return sessionStorage.getItem('motive-console-admin-key') ?? '';
  } catch {
    return '';
  }
}

export function storeAdminKey(key) {
  try {
    sessionStorage.setItem('motive-console-admin-key', key);
  } catch {
    /* kept in memory by the caller */
  }
}
