/**
 * `motive-proxy e2e` as a real process for the tests: started in its own process group, its
 * output collected, its report read; every run and output directory is cleaned up after each
 * test by the hook that `useE2eProcesses` registers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import type { RunReport } from '../../src/e2e/types.js';

const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

export interface E2eRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The output directory (report.json, report.html, logs). */
  readonly out: string;
  readonly seconds: number;
  readonly report: RunReport | null;
}

/** Registers the cleanup and returns the runner: `motive-proxy e2e ARGS --output <temp dir>`, awaited to its end. */
export function useE2eProcesses(): (args: readonly string[], env?: Record<string, string>) => Promise<E2eRun> {
  const started: ChildProcess[] = [];
  const outputs: string[] = [];
  afterEach(async () => {
    for (const child of started.splice(0)) {
      if (child.exitCode !== null || child.signalCode !== null || !child.pid) continue;
      // SIGTERM first: the harness then stops every process group it started itself.
      const gone = once(child, 'close');
      process.kill(-child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5000);
      await gone;
      clearTimeout(timer);
    }
    for (const dir of outputs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  return async (args, env = {}) => {
    const out = mkdtempSync(join(tmpdir(), 'e2e-run-'));
    outputs.push(out);
    const t0 = Date.now();
    const child = spawn(process.execPath, [cli, 'e2e', '--output', out, ...args], {
      detached: true,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, 'close')) as [number | null];
    const path = join(out, 'report.json');
    const report = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as RunReport) : null;
    return { code, stdout, stderr, out, seconds: (Date.now() - t0) / 1000, report };
  };
}
