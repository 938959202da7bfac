/** `motive-proxy e2e` argument parsing: scenario selection, agents, and what is refused. */
import { describe, expect, it } from 'vitest';
import { parseE2eArgs, UsageError } from '../../src/e2e/command.js';
import { SCENARIOS } from '../../src/e2e/scenarios.js';

const names = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseE2eArgs(argv, env).scenarios.map((s) => s.name);

describe('parseE2eArgs', () => {
  it('selects scenarios by repeated flags, lists after one flag, commas, or all of them', () => {
    expect(names(['--scenario', 'multi-turn', '--scenario', 'load'])).toEqual(['multi-turn', 'load']);
    expect(names(['--scenario', 'stateless', 'streaming', '--turns', '3'])).toEqual(['stateless', 'streaming']);
    expect(names(['--scenario=agents,retry-storm'])).toEqual(['agents', 'retry-storm']);
    expect(names(['--all'])).toEqual(SCENARIOS.map((s) => s.name));
    expect(names([])).toEqual(SCENARIOS.map((s) => s.name));
    expect(() => names(['--scenario', 'nope'])).toThrow(/unknown scenario 'nope'; the scenarios are: basic-handshake, multi-turn/);
  });

  it('takes agent commands for either side, and selects the agents scenario for them', () => {
    const args = parseE2eArgs(['--agent-cmd', 'A=python3 a.py --x 1', 'B=node b.js'], {});
    expect(args.agentCommands).toEqual({ A: 'python3 a.py --x 1', B: 'node b.js' });
    expect(args.scenarios.map((s) => s.name)).toEqual(['agents']);
    expect(() => parseE2eArgs(['--agent-cmd', 'C=x'], {})).toThrow(UsageError);
    expect(() => parseE2eArgs(['--scenario', 'load', '--agent-cmd', 'A=x'], {})).toThrow(/add --scenario agents/);
  });

  it('refuses scenarios that need their own server with --url, and fault injection with --url', () => {
    expect(() => parseE2eArgs(['--url', 'http://127.0.0.1:8000', '--scenario', 'crash-recovery'], {})).toThrow(/crash-recovery cannot run with --url/);
    expect(parseE2eArgs(['--url', 'http://127.0.0.1:8000/v1/'], {}).url).toBe('http://127.0.0.1:8000');
    expect(() => parseE2eArgs(['--url', 'http://127.0.0.1:8000', '--fault-injection', 'drop-delivery'], {})).toThrow(/cannot be used with --url/);
  });

  it('takes --keepalive-interval (fractions too) for a proxy at --url only', () => {
    expect(parseE2eArgs(['--url', 'http://127.0.0.1:8000', '--keepalive-interval', '0.5'], {}).keepaliveIntervalSeconds).toBe(0.5);
    expect(parseE2eArgs(['--url', 'http://127.0.0.1:8000'], {}).keepaliveIntervalSeconds).toBeNull();
    expect(() => parseE2eArgs(['--url', 'http://127.0.0.1:8000', '--keepalive-interval', '0'], {})).toThrow(/--keepalive-interval needs a number of seconds above 0 \(got '0'\)/);
    expect(() => parseE2eArgs(['--keepalive-interval', '15'], {})).toThrow(/--keepalive-interval describes a proxy you run \(--url\)/);
  });

  it('picks a seed that --seed takes back', () => {
    for (let n = 0; n < 200; n++) {
      const { seed } = parseE2eArgs([], {});
      expect(parseE2eArgs(['--seed', String(seed)], {}).seed).toBe(seed);
    }
  });

  it('takes the fault from FAULT_INJECTION or the flag, and checks its value and the numbers', () => {
    expect(parseE2eArgs([], { FAULT_INJECTION: 'duplicate-delivery' }).faultInjection).toBe('duplicate-delivery');
    expect(parseE2eArgs(['--fault-injection', 'off'], { FAULT_INJECTION: 'drop-delivery' }).faultInjection).toBeNull();
    expect(() => parseE2eArgs([], { FAULT_INJECTION: 'sometimes' })).toThrow(/must be one of duplicate-delivery, drop-delivery or off/);
    expect(() => parseE2eArgs(['--turns', '0'], {})).toThrow(/--turns needs a whole number/);
    expect(() => parseE2eArgs(['--protocol', 'gemini'], {})).toThrow(/--protocol must be one of openai, anthropic, responses, mixed/);
    expect(() => parseE2eArgs(['--bogus'], {})).toThrow(/unknown option '--bogus'/);
  });
});
