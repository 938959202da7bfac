/**
 * Child processes of the harness: the service and the client runners. Each runs in its own
 * process group (spawned detached), so that stopping one stops everything it started (a shell,
 * an agent program), and every group still alive is killed when the harness exits.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Every process group this harness started (a group outlives its leader if a member does). */
const groups = new Set<number>();

export const CLI_PATH = fileURLToPath(new URL('../cli.js', import.meta.url));
export const RUNNER_PATH = fileURLToPath(new URL('./runner.js', import.meta.url));
export const GUESS_NUMBER_PATH = fileURLToPath(new URL('./agents/guess-number.js', import.meta.url));

export const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

/** Spawns `command` detached (its own process group); stdout/stderr appended to `logPath`. */
export function spawnGroup(command: string, args: readonly string[], options: SpawnOptions & { logPath: string; pipeStdout?: boolean }): ChildProcess {
  const log = openSync(options.logPath, 'a');
  try {
    const child = spawn(command, args, {
      ...options,
      detached: true,
      stdio: ['pipe', options.pipeStdout ? 'pipe' : log, log],
    });
    if (child.pid) groups.add(child.pid);
    return child;
  } finally {
    closeSync(log); // the child holds its own copy
  }
}

/** Sends `signal` to the child's whole process group. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!child.pid || !isRunning(child)) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** Resolves when the child has exited and its pipes are closed (false on timeout). */
export async function closed(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (!isRunning(child) && (child.stdout === null || child.stdout.readableEnded || child.stdout.destroyed)) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
  const done = once(child, 'close').then(() => true);
  const result = await Promise.race([done, timeout]);
  clearTimeout(timer);
  return result;
}

/** SIGTERM to the group, then SIGKILL if it is still there after `graceMs`. */
export async function stopGroup(child: ChildProcess, graceMs = 6000): Promise<void> {
  signalGroup(child, 'SIGTERM');
  if (await closed(child, graceMs)) return;
  signalGroup(child, 'SIGKILL');
  await closed(child, 5000);
}

/** Kills every group still alive (on exit, on Ctrl-C), including what their leaders left behind. */
export function killAll(): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // nobody left in it
    }
  }
  groups.clear();
}
