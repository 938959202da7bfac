/**
 * The run's reports: report.json (everything, machine-readable) and report.html, one
 * self-contained page (inline CSS and SVG, no scripts, nothing fetched) with the verdicts, a
 * timeline of each session's messages, relay-latency histograms and, for failed sessions, the
 * service's log lines about them.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatMs, histogram } from './stats.js';
import type { RunReport, ScenarioReport, SessionReport } from './types.js';

export function writeReports(report: RunReport, outDir: string): { json: string; html: string } {
  const json = join(outDir, 'report.json');
  const html = join(outDir, 'report.html');
  writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(html, renderHtml(report));
  return { json, html };
}

const esc = (value: unknown): string =>
  String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const COLORS = { A: '#2563eb', B: '#d97706', pass: '#15803d', fail: '#b91c1c', grid: '#e5e7eb', text: '#374151', muted: '#6b7280' };

const badge = (verdict: string): string => {
  const cls = verdict === 'pass' ? 'pass' : verdict === 'fail' ? 'fail' : 'skip';
  return `<span class="badge ${cls}">${esc(verdict === 'not-run' ? 'NOT RUN' : verdict.toUpperCase())}</span>`;
};

/** A bar chart of relay latencies in log-spaced buckets. */
export function histogramSvg(latencies: readonly number[]): string {
  if (latencies.length === 0) return '<p class="muted">No relayed messages.</p>';
  const buckets = histogram(latencies);
  const width = 640;
  const height = 180;
  const left = 40;
  const bottom = 36;
  const plotH = height - bottom - 12;
  const max = Math.max(...buckets.map((b) => b.count));
  const barW = Math.min(56, (width - left - 10) / buckets.length);
  const bars = buckets
    .map((b, i) => {
      const h = max === 0 ? 0 : (b.count / max) * plotH;
      const x = left + i * barW;
      const y = 12 + plotH - h;
      return (
        `<rect x="${(x + 2).toFixed(1)}" y="${y.toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS.A}"><title>≤ ${b.le} ms: ${b.count}</title></rect>` +
        (b.count > 0 ? `<text x="${(x + barW / 2).toFixed(1)}" y="${(y - 2).toFixed(1)}" text-anchor="middle" class="small">${b.count}</text>` : '') +
        `<text x="${(x + barW / 2).toFixed(1)}" y="${height - bottom + 14}" text-anchor="middle" class="small">≤${b.le}</text>`
      );
    })
    .join('');
  return `<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="relay latency histogram">
<line x1="${left}" y1="${12 + plotH}" x2="${left + barW * buckets.length}" y2="${12 + plotH}" stroke="${COLORS.muted}"/>
<text x="${left - 6}" y="18" text-anchor="end" class="small">${max}</text><text x="${left - 6}" y="${12 + plotH}" text-anchor="end" class="small">0</text>
${bars}
<text x="${left}" y="${height - 4}" class="small">relay latency (ms, upper bound of bucket): from a side's send to the other side's receipt</text>
</svg>`;
}

const TIMELINE_ROWS = 40;

/** One row per session: each message a line from its send to its receipt (A→B blue, B→A amber). */
export function timelineSvg(sessions: readonly SessionReport[]): string {
  if (sessions.length === 0) return '';
  // Failed sessions first, then in order; at most TIMELINE_ROWS rows.
  const shown = [...sessions.filter((s) => s.verdict === 'fail'), ...sessions.filter((s) => s.verdict !== 'fail')].slice(0, TIMELINE_ROWS);
  const t0 = Math.min(...shown.map((s) => s.startedAt));
  const t1 = Math.max(...shown.map((s) => s.endedAt), t0 + 1);
  const width = 1100;
  const labelW = 170;
  const rowH = 22;
  const top = 20;
  const height = top + shown.length * rowH + 28;
  const x = (t: number) => labelW + ((t - t0) / (t1 - t0)) * (width - labelW - 40);
  const ticks = 6;
  const grid = Array.from({ length: ticks + 1 }, (_, i) => {
    const t = t0 + ((t1 - t0) * i) / ticks;
    return `<line x1="${x(t).toFixed(1)}" y1="${top - 4}" x2="${x(t).toFixed(1)}" y2="${height - 24}" stroke="${COLORS.grid}"/><text x="${x(t).toFixed(1)}" y="${height - 10}" text-anchor="middle" class="small">${formatMs(t - t0)}${t - t0 >= 10_000 ? '' : ' ms'}</text>`;
  }).join('');
  const rows = shown
    .map((s, r) => {
      const y = top + r * rowH + rowH / 2;
      const label = s.id.length > 26 ? `…${s.id.slice(-25)}` : s.id;
      const marks = s.turns
        .map((t) => {
          const color = t.from === 'A' ? COLORS.A : COLORS.B;
          const dy = t.from === 'A' ? -4 : 4;
          const title = `${t.from}→${t.to} #${t.n}: ${t.latencyMs === null ? 'never received' : `${t.latencyMs} ms`}${t.attempts.length > 1 ? `, ${t.attempts.length} attempts (${t.attempts.join(', ')})` : ''}`;
          if (t.receivedAt === null) {
            return `<circle cx="${x(t.sentAt).toFixed(1)}" cy="${y + dy}" r="4" fill="${COLORS.fail}"><title>${esc(title)}</title></circle>`;
          }
          const x1 = x(t.sentAt);
          const x2 = Math.max(x(t.receivedAt), x1 + 2);
          return `<line x1="${x1.toFixed(1)}" y1="${y + dy}" x2="${x2.toFixed(1)}" y2="${y + dy}" stroke="${color}" stroke-width="3" stroke-linecap="round"><title>${esc(title)}</title></line>`;
        })
        .join('');
      const hs = s.handshake;
      const held =
        hs && hs.answeredAt !== null
          ? `<line x1="${x(hs.sentAt).toFixed(1)}" y1="${y - 4}" x2="${Math.max(x(hs.answeredAt), x(hs.sentAt) + 2).toFixed(1)}" y2="${y - 4}" stroke="#9ca3af" stroke-width="2" stroke-dasharray="4 3"><title>A's handshake, held ${Math.round(hs.answeredAt - hs.sentAt)} ms until B spoke</title></line>`
          : '';
      const color = s.verdict === 'pass' ? COLORS.pass : COLORS.fail;
      return `<rect x="${labelW}" y="${y - rowH / 2 + 1}" width="${width - labelW - 40}" height="${rowH - 2}" fill="${r % 2 ? '#f9fafb' : '#ffffff'}"/><circle cx="8" cy="${y}" r="4" fill="${color}"/><text x="16" y="${y + 4}" class="small">${esc(label)}</text>${held}${marks}`;
    })
    .join('');
  const more = sessions.length > shown.length ? `<p class="muted">Showing ${shown.length} of ${sessions.length} sessions (failed ones first).</p>` : '';
  return `<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="session timeline">
<text x="${labelW}" y="12" class="small"><tspan fill="${COLORS.A}">━ A→B</tspan>  <tspan fill="${COLORS.B}">━ B→A</tspan>  <tspan fill="${COLORS.fail}">● never received</tspan>  <tspan fill="${COLORS.muted}">┅ A's handshake held</tspan>  (from send to receipt)</text>
${grid}${rows}
</svg>${more}`;
}

function sessionDetails(s: SessionReport): string {
  const turns = s.turns
    .map(
      (t) =>
        `<tr><td>${t.n}</td><td>${t.from}→${t.to}</td><td class="num">${t.latencyMs === null ? '<b class="bad">lost</b>' : esc(t.latencyMs)}</td><td>${esc(t.attempts.join(', '))}</td><td class="content">${esc(t.content)}</td></tr>`,
    )
    .join('');
  const log = s.serverLog.length ? `<h5>Service log lines of this session</h5><pre class="log">${esc(s.serverLog.join('\n'))}</pre>` : '';
  const reasons = s.reasons.length ? `<ul class="reasons">${s.reasons.map((r) => `<li>${esc(r)}</li>`).join('')}</ul>` : '';
  const notes = s.notes.length ? `<h5>Agent notes</h5><pre class="log">${esc(s.notes.map((n) => JSON.stringify(n)).join('\n'))}</pre>` : '';
  const files = Object.entries(s.files)
    .map(([k, v]) => `${esc(k)}: <code>${esc(v)}</code>`)
    .join(' · ');
  return `<details${s.verdict === 'fail' ? ' open' : ''}><summary>${badge(s.verdict)} <code>${esc(s.id)}</code> — A: ${esc(s.protocols.A)}, B: ${esc(s.protocols.B)}${s.stream ? ', streaming' : ''}</summary>
${reasons}
<p class="muted">HTTP attempts ${s.counts.attempts} (SDK retries ${s.counts.retries}; statuses ${esc(
    Object.entries(s.counts.statuses)
      .map(([k, v]) => `${k}×${v}`)
      .join(', '),
  )})${s.counts.injectedResets ? ` · injected resets ${s.counts.injectedResets}` : ''}${s.counts.duplicates ? ` · duplicate sends ${s.counts.duplicates}` : ''}${s.counts.appRetries ? ` · application re-calls ${s.counts.appRetries}` : ''} · files: ${files}</p>
<table class="turns"><tr><th>#</th><th>dir</th><th>latency ms</th><th>sender's attempts</th><th>content</th></tr>${turns}</table>
${notes}${log}</details>`;
}

function listOf(title: string, items: readonly string[] | undefined): string {
  return items && items.length > 0 ? `<p class="muted"><b>${esc(title)}:</b></p><ul class="muted">${items.map((x) => `<li>${esc(x)}</li>`).join('')}</ul>\n` : '';
}

function scenarioSection(s: ScenarioReport): string {
  const latencies = s.sessions.flatMap((x) => x.turns.map((t) => t.latencyMs).filter((v): v is number => v !== null));
  const reasons = s.reasons.length
    ? `<ul class="reasons">${s.reasons
        .slice(0, 30)
        .map((r) => `<li>${esc(r)}</li>`)
        .join('')}${s.reasons.length > 30 ? `<li>… ${s.reasons.length - 30} more (report.json)</li>` : ''}</ul>`
    : '';
  const settings = Object.entries(s.settings)
    .filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</td></tr>`)
    .join('');
  const events = s.events.length ? `<h4>Events</h4><ul>${s.events.map((e) => `<li><span class="muted">+${formatMs(e.t - s.startedAt)} ms</span> ${esc(e.what)}</li>`).join('')}</ul>` : '';
  const failedFirst = [...s.sessions.filter((x) => x.verdict === 'fail'), ...s.sessions.filter((x) => x.verdict !== 'fail')];
  const details = failedFirst.slice(0, 60).map(sessionDetails).join('');
  const more = s.sessions.length > 60 ? `<p class="muted">${s.sessions.length - 60} more sessions in report.json.</p>` : '';
  return `<section id="${esc(s.name)}">
<h2>${badge(s.verdict)} ${esc(s.name)}</h2>
<p>${esc(s.summary)}</p>
<p class="condition"><b>Pass condition.</b> ${esc(s.passCondition)}</p>
${listOf('Not checked in this run', s.skippedChecks)}${listOf('Seen (not required)', s.observations)}${reasons}
<h4>Relay latency</h4>${histogramSvg(latencies)}<p class="muted">p50 ${s.stats.latency.p50} ms · p90 ${s.stats.latency.p90} ms · p99 ${s.stats.latency.p99} ms · max ${s.stats.latency.max} ms · ${s.stats.latency.count} messages</p>
<details class="settings"><summary>Settings and process model</summary><table class="kv">${settings}</table></details>
${events}
<h4>Timeline</h4>${timelineSvg(s.sessions)}
<h4>Sessions</h4>${details}${more}
</section>`;
}

export function renderHtml(report: RunReport): string {
  const rows = report.scenarios
    .map(
      (s) =>
        `<tr><td><a href="#${esc(s.name)}">${esc(s.name)}</a></td><td>${badge(s.verdict)}</td><td class="num">${s.stats.sessionsPassed}/${s.stats.sessions}</td><td class="num">${s.stats.turns}</td><td class="num">${s.stats.errors}</td><td class="num">${s.stats.latency.count ? s.stats.latency.p50 : '-'}</td><td class="num">${s.stats.latency.count ? s.stats.latency.p99 : '-'}</td><td class="num">${(s.durationMs / 1000).toFixed(1)} s</td><td>${esc(s.summary)}</td></tr>`,
    )
    .join('');
  const options = Object.entries(report.options)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${esc(k)}=<code>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</code>`)
    .join(' · ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>MotiveProxy e2e — ${report.ok ? 'PASS' : 'FAIL'}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:${COLORS.text};margin:24px auto;max-width:1280px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-top:1px solid ${COLORS.grid};padding-top:16px}h4{margin:14px 0 6px}h5{margin:10px 0 4px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;vertical-align:middle}
.badge.pass{background:${COLORS.pass}}.badge.fail{background:${COLORS.fail}}.badge.skip{background:${COLORS.muted}}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid ${COLORS.grid};text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.muted{color:${COLORS.muted}}.bad{color:${COLORS.fail}}
.reasons li{color:${COLORS.fail}}.condition{background:#f3f4f6;padding:6px 10px;border-radius:6px}
.kv th{font-weight:500;color:${COLORS.muted}}.kv td{max-width:520px;word-break:break-word}
details{margin:4px 0;padding:4px 8px;border:1px solid ${COLORS.grid};border-radius:6px}summary{cursor:pointer}
.turns td.content{max-width:640px;word-break:break-word;white-space:pre-wrap}
pre.log{background:#111827;color:#e5e7eb;padding:8px;border-radius:6px;max-height:360px;overflow:auto;font-size:12px;white-space:pre-wrap;word-break:break-all}
svg .small{font-size:11px;fill:${COLORS.text}}code{font-size:12px}
</style></head><body>
<h1>MotiveProxy end-to-end report ${badge(report.ok ? 'pass' : 'fail')}</h1>
<p class="muted">motive-proxy ${esc(report.version)} · started ${esc(report.startedAt)} · ${(report.durationMs / 1000).toFixed(1)} s · ${options}</p>
<table><tr><th>scenario</th><th>verdict</th><th>sessions passed</th><th>messages received</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>time</th><th>what it proves</th></tr>${rows}</table>
<p class="muted">Each session's two sides ran as separate client processes talking to the service over HTTP/WebSocket only; every verdict is computed from what those clients recorded. Service and client logs are in the folders beside this file.</p>
${report.scenarios.map(scenarioSection).join('\n')}
</body></html>
`;
}
