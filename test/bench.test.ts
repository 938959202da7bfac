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

it('runs the proxy, and only the proxy, with the flags of --proxy-flags, and records them', async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-flags-'));
  const marker = join(out, 'started.txt');
  // A module the flag imports into every process it reaches: each one writes its entry point down.
  const flags = "--import=data:text/javascript,import{appendFileSync}from'node:fs';appendFileSync(process.env.BENCH_TEST_MARKER,process.argv[1]+'\\n')";
  await new Promise<void>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--import', 'tsx', 'bench/run.ts', '--smoke', '--no-build', '--no-cluster', '--out', out, '--proxy-flags', flags],
      { cwd: root, env: { ...process.env, BENCH_TEST_MARKER: marker } },
      (err, _stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve()),
    ),
  );
  const started = readFileSync(marker, 'utf8').trim().split('\n');
  expect(started.length).toBeGreaterThan(0);
  for (const entry of started) expect(entry.endsWith(join('dist', 'src', 'cli.js'))).toBe(true);
  const file = readdirSync(out).find((f) => f.endsWith('.json'))!;
  const report = JSON.parse(readFileSync(join(out, file), 'utf8')) as {
    settings: { proxyNodeFlags: string[] };
    relay: Array<{ target: string; result: { turns: number; errors: Record<string, number> } }>;
  };
  expect(report.settings.proxyNodeFlags).toEqual([flags]);
  expect(new Set(report.relay.map((c) => c.target))).toEqual(new Set(['baseline', 'proxy']));
  for (const c of report.relay) expect(c.result.errors).toEqual({});
}, 120_000);

it('refuses --proxy-flags without its value, with a usage error', async () => {
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke', '--no-build', '--proxy-flags'], { cwd: root }, (err, _stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
    ),
  );
  expect(code).toBe(2);
  expect(stderr).toContain('--proxy-flags needs the flags as one argument');
}, 60_000);

it('compares the proxy under sets of flags and under none, interleaved, with --sweep-flags', async () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-sweep-'));
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--import', 'tsx', 'bench/run.ts', '--smoke', '--no-build', '--out', out, '--sweep-flags', '--max-semi-space-size=8,--max-semi-space-size=4 --stack-size=2000'],
      { cwd: root },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  const file = readdirSync(out).find((f) => f.endsWith('-flag-sweep.json'))!;
  const report = JSON.parse(readFileSync(join(out, file), 'utf8')) as {
    baselines: Array<{ turnsPerSecond: number; cpu: number }>;
    variants: Record<string, Array<{ cpuRatio: number; heldRssMb: number; s1P99Ms: number; errors: Record<string, number> }>>;
  };
  expect(Object.keys(report.variants)).toEqual(['none', '--max-semi-space-size=8', '--max-semi-space-size=4 --stack-size=2000']);
  expect(report.baselines).toHaveLength(1);
  for (const rows of Object.values(report.variants)) {
    expect(rows).toHaveLength(1);
    expect(rows[0]!.cpuRatio).toBeGreaterThan(0);
    expect(rows[0]!.heldRssMb).toBeGreaterThan(0);
    expect(rows[0]!.errors).toEqual({});
  }
  expect(stdout).toContain('| `--max-semi-space-size=8` |');
}, 120_000);

it('refuses --sweep-flags without its value, or beside --proxy-flags', async () => {
  for (const extra of [['--sweep-flags'], ['--sweep-flags', '--max-semi-space-size=8', '--proxy-flags', '--max-semi-space-size=8']]) {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
      execFile(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke', '--no-build', ...extra], { cwd: root }, (err, _stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
      ),
    );
    expect(code).toBe(2);
    expect(stderr).toContain('--sweep-flags needs the flag sets as one argument');
  }
}, 60_000);
