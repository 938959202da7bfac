/**
 * The benchmark still works end to end (`npm run bench -- --smoke`), its cluster cases too: both the proxy and the
 * baseline are started as processes, driven by the load generator, and every relayed turn
 * arrives with the right content. No performance thresholds here; `npm run bench` checks those.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

it('runs the smoke benchmark and records both targets with no errors', async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
  await new Promise<void>((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke', '--no-build', '--out', out], { cwd: root }, (err, _stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(),
    ),
  );
  const [file] = readdirSync(out);
  const report = JSON.parse(readFileSync(join(out, file!), 'utf8')) as {
    relay: Array<{ target: string; result: { turns: number; errors: Record<string, number> } }>;
    held: Array<{ target: string; errors: Record<string, number> }>;
    ratios: Array<{ throughputRatio: number }>;
    cluster: {
      cluster: Array<{ instances: number; result: { turns: number; errors: Record<string, number> }; redisCommandsPerTurn: number }>;
      takeover: { sessions: number; answered: number; medianMs: number };
    } | null;
  };
  expect(new Set(report.relay.map((c) => c.target))).toEqual(new Set(['baseline', 'proxy']));
  for (const c of report.relay) {
    expect(c.result.turns).toBeGreaterThan(0);
    expect(c.result.errors).toEqual({});
  }
  for (const c of report.held) expect(c.errors).toEqual({});
  expect(report.ratios.length).toBeGreaterThan(0);
  for (const r of report.ratios) expect(r.throughputRatio).toBeGreaterThan(0);
  // The cluster cases: 1 and 2 instances on a private Redis, and every session taken over after the kill.
  expect(report.cluster?.cluster.map((c) => c.instances)).toEqual([1, 2]);
  for (const c of report.cluster!.cluster) {
    expect(c.result.turns).toBeGreaterThan(0);
    expect(c.result.errors).toEqual({});
    expect(c.redisCommandsPerTurn).toBeGreaterThan(0);
  }
  expect(report.cluster!.takeover.answered).toBe(report.cluster!.takeover.sessions);
}, 240_000);
