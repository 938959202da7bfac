// The one command-line parser: node:util parseArgs, strict, plus bare and negated switches.
import { describe, expect, it } from 'vitest';
import { parseCommandLine, UsageError } from '../src/args.js';
import { parseArgs } from '../src/config.js';

describe('parseCommandLine', () => {
  const options = { port: { type: 'string' as const }, inspect: { type: 'string' as const }, help: { type: 'boolean' as const, short: 'h' } };

  it('takes --name value, --name=value, bare and negated switches, and short flags', () => {
    const line = parseCommandLine(['--port', '9000', '--inspect', '-h'], options, { switches: ['inspect'] });
    expect(line.values).toMatchObject({ port: '9000', inspect: 'true', help: true });
    expect(parseCommandLine(['--no-inspect'], options, { switches: ['inspect'] }).values['inspect']).toBe('false');
    expect(parseCommandLine(['--inspect', 'false'], options, { switches: ['inspect'] }).values['inspect']).toBe('false');
    expect(parseCommandLine(['--inspect=off', '--port=1'], options, { switches: ['inspect'] }).values).toMatchObject({ inspect: 'off', port: '1' });
  });

  it('says which positional follows which option', () => {
    const line = parseCommandLine(['lone', '--port', '1', 'a', 'b'], options, { allowPositionals: true });
    expect(line.after).toEqual([
      { value: 'lone', option: null },
      { value: 'a', option: '--port' },
      { value: 'b', option: '--port' },
    ]);
  });

  it('refuses an unknown option, a missing value and a stray argument, naming them', () => {
    expect(() => parseCommandLine(['--prot', '1'], options)).toThrow(new UsageError("unknown option '--prot' (see --help)"));
    expect(() => parseCommandLine(['--port'], options)).toThrow(/option '--port' needs a value/);
    expect(() => parseCommandLine(['stray'], options)).toThrow(/unexpected argument 'stray'/);
  });

  it('reads every setting of the service, as flags', () => {
    expect(parseArgs(['--log-level', 'debug', '--enable-prometheus', '--no-answer-background-tasks', '--port=0']).values).toEqual({
      logLevel: 'debug',
      enablePrometheus: 'true',
      answerBackgroundTasks: 'false',
      port: '0',
    });
    expect(parseArgs(['-v']).version).toBe(true);
  });
});
