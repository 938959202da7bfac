// The shipped alert rules and Grafana dashboard: the rules pass their own unit tests under
// Prometheus's promtool (`promtool test rules`), and every metric a rule or a dashboard query
// names is one a real instance exports at /metrics (a cluster instance, so cluster mode's
// metrics are there too).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { killAll, startCluster } from '../cluster/instances.js';
import { freePort } from '../helpers/net.js';
import { startRedis, type PrivateRedis } from '../helpers/redis.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

/** promtool: PROMTOOL_PATH, then PATH, then the copy scripts/ensure-promtool.sh unpacked. */
function promtool(): string {
  if (process.env['PROMTOOL_PATH']) return process.env['PROMTOOL_PATH'];
  const unpacked = `${root}node_modules/.cache/promtool/usr/bin/promtool`;
  return existsSync(unpacked) ? unpacked : 'promtool';
}

/** Metric names in PromQL text (a histogram's series are named by their family). */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\bmotiveproxy_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

let redis: PrivateRedis | null = null;
afterAll(async () => {
  killAll();
  await redis?.destroy();
});

describe('alert rules and dashboard', () => {
  it('the alert rules pass promtool check and their unit tests', async () => {
    const check = await run(promtool(), ['check', 'rules', 'alerts.yml'], { cwd: `${root}deploy/prometheus` });
    expect(check.stdout).toMatch(/SUCCESS: 11 rules found/);
    const tests = await run(promtool(), ['test', 'rules', 'alerts.test.yml'], { cwd: `${root}deploy/prometheus` });
    expect(tests.stdout).toMatch(/SUCCESS/);
  }, 60_000);

  it('names only metrics a running instance exports, in every rule and every dashboard query', async () => {
    redis ??= await startRedis();
    // With a bridge configured (an SMTP listener and a relay nobody answers at), so that the bridges' metrics are there too.
    const [instance] = await startCluster(redis.url, 1, {
      ENABLE_PROMETHEUS: 'true',
      METRICS_PUBLIC: 'true',
      BRIDGE_EMAIL_SMTP_URL: 'smtp://127.0.0.1:9',
      BRIDGE_EMAIL_ADDRESS: 'npc@game.test',
      BRIDGE_EMAIL_SMTP_LISTEN: `127.0.0.1:${await freePort()}`,
    });
    const scraped = await (await fetch(`${instance!.url}/metrics`)).text();
    const exported = new Set([...scraped.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    expect(exported.size).toBeGreaterThan(20);

    const dashboard = JSON.parse(readFileSync(`${root}deploy/grafana/motiveproxy.json`, 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
      templating: { list: Array<{ definition?: string }> };
    };
    const queries = [
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}"`, expr: t.expr }))),
      ...dashboard.templating.list.filter((v) => v.definition).map((v) => ({ where: 'a template variable', expr: v.definition! })),
    ];
    const rules = readFileSync(`${root}deploy/prometheus/alerts.yml`, 'utf8');
    for (const [, expr] of rules.matchAll(/^\s+expr: (.+)$/gm)) queries.push({ where: 'alerts.yml', expr: expr! });
    expect(queries.length).toBeGreaterThan(25);

    const unknown = queries.flatMap(({ where, expr }) => metricsIn(expr).filter((name) => !exported.has(name)).map((name) => `${where}: ${name}`));
    expect(unknown).toEqual([]);
    // Each panel asks for something, and the dashboard covers what operators watch.
    for (const panel of dashboard.panels) expect(panel.targets.length, panel.title).toBeGreaterThan(0);
    const named = new Set(queries.flatMap(({ expr }) => metricsIn(expr)));
    for (const family of ['motiveproxy_sessions_active', 'motiveproxy_messages_total', 'motiveproxy_turn_latency_ms', 'motiveproxy_timeouts_total', 'motiveproxy_errors_total', 'motiveproxy_journal_append_seconds']) {
      expect(named.has(family), family).toBe(true);
    }
  }, 60_000);
});
