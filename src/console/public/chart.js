// Draws the session state chart as SVG from the machine's definition (GET /console/chart.json),
// with the current state highlighted. The layout is computed, not drawn by hand: states are
// put in rows by their longest path from the initial state (after setting aside the edges that
// lead back), so a changed chart is drawn correctly without touching this file.

const SVG = 'http://www.w3.org/2000/svg';

/** Transitions that leave a state, grouped by target; self-transitions are kept apart. */
function edgesOf(chart) {
  const edges = [];
  const loops = new Map();
  for (const state of chart.states) {
    const byTarget = new Map();
    for (const t of state.transitions) {
      if (t.target === state.name) {
        loops.set(state.name, [...(loops.get(state.name) ?? []), t]);
        continue;
      }
      byTarget.set(t.target, [...(byTarget.get(t.target) ?? []), t]);
    }
    for (const [target, transitions] of byTarget) edges.push({ from: state.name, to: target, transitions });
  }
  return { edges, loops };
}

/** `X_A` and `X_B` shown once as `X_A/B`; guards in brackets; timers as `after <delay>`. */
export function labelOf(transitions) {
  const parts = transitions.map((t) => (t.guard ? `${t.event} [${t.guard}]` : t.event));
  const out = [];
  for (const p of parts) {
    const m = /^(.*)_A$/.exec(p);
    if (m && parts.includes(`${m[1]}_B`)) out.push(`${m[1]}_A/B`);
    else if (/_B$/.test(p) && parts.includes(p.replace(/_B$/, '_A'))) continue;
    else out.push(p);
  }
  return out;
}

/** Row of each state: longest path from the initial state over forward edges. */
export function layout(chart) {
  const names = chart.states.map((s) => s.name);
  const { edges, loops } = edgesOf(chart);
  const out = new Map(names.map((n) => [n, edges.filter((e) => e.from === n)]));
  // Depth-first from the initial state, in declaration order: an edge to a state still on the
  // stack leads back (DORMANT → ACTIVE) and does not count for the rows.
  const back = new Set();
  const visiting = new Set();
  const done = new Set();
  const visit = (n) => {
    visiting.add(n);
    for (const e of out.get(n) ?? []) {
      if (visiting.has(e.to)) back.add(e);
      else if (!done.has(e.to)) visit(e.to);
    }
    visiting.delete(n);
    done.add(n);
  };
  if (names.includes(chart.initial)) visit(chart.initial);
  for (const n of names) if (!done.has(n)) visit(n);
  const rank = new Map(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) {
    for (const e of edges) {
      if (back.has(e)) continue;
      if ((rank.get(e.to) ?? 0) < (rank.get(e.from) ?? 0) + 1) rank.set(e.to, (rank.get(e.from) ?? 0) + 1);
    }
  }
  const order = [...names].sort((a, b) => rank.get(a) - rank.get(b) || names.indexOf(a) - names.indexOf(b));
  return { order, edges, loops };
}

const el = (name, attrs = {}, text) => {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
};

const BOX_X = 16;
const BOX_W = 156;
const BOX_H = 42;
const GAP = 46;
const TOP = 12;
/** Roughly how wide a label of n characters is at the labels' font size. */
const textWidth = (n) => n * 6;

/** Draws `chart` into `svg` (replacing its content) with `current` highlighted. */
export function drawChart(svg, chart, current) {
  const { order, edges, loops } = layout(chart);
  const row = new Map(order.map((n, i) => [n, i]));
  const y = (n) => TOP + row.get(n) * (BOX_H + GAP);
  const height = TOP * 2 + order.length * BOX_H + (order.length - 1) * GAP;
  svg.replaceChildren();
  let width = BOX_X + BOX_W + 20;
  const widen = (x, text) => {
    width = Math.max(width, x + textWidth(text.length) + 8);
  };
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Session state chart${current ? `; the session is in ${current}` : ''}`);

  const defs = el('defs');
  const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
  marker.append(el('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }));
  defs.append(marker);
  svg.append(defs);

  // Edges between neighbouring rows: arrows in the gap, their labels beside them.
  const gaps = new Map();
  const lanes = [];
  for (const e of edges) {
    const a = row.get(e.from);
    const b = row.get(e.to);
    if (a === undefined || b === undefined) continue;
    if (Math.abs(a - b) === 1) {
      const g = Math.min(a, b);
      gaps.set(g, [...(gaps.get(g) ?? []), { ...e, down: b > a }]);
    } else {
      lanes.push({ ...e, down: b > a, span: Math.abs(a - b) });
    }
  }
  // Lanes of longer edges run right of the boxes and of the labels between them.
  let laneBase = BOX_X + BOX_W + 14;
  for (const [g, list] of gaps) {
    const top = TOP + g * (BOX_H + GAP) + BOX_H;
    const lines = [];
    list.forEach((e, i) => {
      const x = BOX_X + 28 + i * 14;
      const [y1, y2] = e.down ? [top + 2, top + GAP - 2] : [top + GAP - 2, top + 2];
      svg.append(el('line', { x1: x, y1, x2: x, y2, class: 'edge', 'marker-end': 'url(#arrow)' }));
      lines.push(`${e.down ? '↓' : '↑'} ${labelOf(e.transitions).join(', ')}`);
    });
    const x = BOX_X + 28 + list.length * 14 + 4;
    lines.forEach((line, i) => {
      const ty = top + GAP / 2 + (i - (lines.length - 1) / 2) * 12 + 4;
      svg.append(el('text', { x, y: ty, class: 'edge-label' }, line));
      widen(x, line);
      laneBase = Math.max(laneBase, x + textWidth(line.length) + 8);
    });
  }

  // Longer edges: lanes to the right of the boxes, the widest span outermost.
  lanes.sort((p, q) => p.span - q.span);
  const arrivals = new Map();
  lanes.forEach((e, i) => {
    const lane = laneBase + i * 12;
    const k = arrivals.get(e.to) ?? 0;
    arrivals.set(e.to, k + 1);
    const sy = y(e.from) + BOX_H / 2;
    const ty = y(e.to) + BOX_H / 2 + (e.down ? -1 : 1) * (6 + k * 6);
    const d = `M${BOX_X + BOX_W},${sy} H${lane} V${ty} H${BOX_X + BOX_W + 2}`;
    svg.append(el('path', { d, class: 'edge', fill: 'none', 'marker-end': 'url(#arrow)' }));
    // The lane shows where it goes; the label says on what, beside the state it leaves.
    const lx = laneBase + lanes.length * 12 + 2;
    const label = labelOf(e.transitions);
    label.forEach((line, j) => {
      const text = e.down ? line : `${line} (↑ ${e.to})`;
      svg.append(el('text', { x: lx, y: sy + 4 + (j - (label.length - 1) / 2) * 12, class: 'edge-label' }, text));
      widen(lx, text);
    });
  });

  for (const name of order) {
    const state = chart.states.find((s) => s.name === name);
    const isCurrent = name === current;
    const g = el('g', { class: `state${isCurrent ? ' current' : ''}${state.final ? ' final' : ''}${name === chart.initial ? ' initial' : ''}` });
    if (isCurrent) g.setAttribute('aria-current', 'true');
    g.setAttribute('data-state', name);
    g.append(el('rect', { x: BOX_X, y: y(name), width: BOX_W, height: BOX_H, rx: 9 }));
    if (state.final) g.append(el('rect', { x: BOX_X + 3, y: y(name) + 3, width: BOX_W - 6, height: BOX_H - 6, rx: 7, class: 'inner' }));
    g.append(el('text', { x: BOX_X + BOX_W / 2, y: y(name) + (loops.has(name) ? 18 : 26), class: 'state-name', 'text-anchor': 'middle' }, name));
    const selfEvents = loops.get(name);
    if (selfEvents) {
      g.append(el('text', { x: BOX_X + BOX_W / 2, y: y(name) + 33, class: 'state-loops', 'text-anchor': 'middle' }, `↻ ${labelOf(selfEvents).length} events stay here`));
    }
    svg.append(g);
  }
  svg.setAttribute('viewBox', `0 0 ${Math.ceil(width)} ${height}`);
  if (names(chart).includes(chart.initial)) {
    const iy = y(chart.initial) + BOX_H / 2;
    svg.append(el('circle', { cx: 6, cy: iy, r: 4, class: 'initial-dot' }));
    svg.append(el('line', { x1: 10, y1: iy, x2: BOX_X - 1, y2: iy, class: 'edge', 'marker-end': 'url(#arrow)' }));
  }
}

const names = (chart) => chart.states.map((s) => s.name);

/** What can happen in `stateName`, in words: for the list under the chart. */
export function describeState(chart, stateName) {
  const state = chart.states.find((s) => s.name === stateName);
  if (!state) return { stays: [], leaves: [], final: false };
  const { loops } = edgesOf(chart);
  const byTarget = new Map();
  for (const t of state.transitions) {
    if (t.target === stateName) continue;
    byTarget.set(t.target, [...(byTarget.get(t.target) ?? []), t]);
  }
  return {
    stays: labelOf(loops.get(stateName) ?? []),
    leaves: [...byTarget].map(([target, ts]) => ({ target, on: labelOf(ts) })),
    final: state.final,
  };
}
