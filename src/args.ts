/**
 * The one command-line parser of the `motive-proxy` commands (the service, `transcript`, `e2e`):
 * node:util parseArgs, strict, with the two forms it lacks on Node 20 added in front of it:
 * a switch given bare (`--inspect`) or negated (`--no-inspect`), for settings that also take
 * `--inspect=false`. Its errors become a UsageError naming the option, in the commands' words.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>[string];

export interface CommandLine {
  readonly values: Record<string, string | boolean | string[] | undefined>;
  readonly positionals: readonly string[];
  /** Each positional with the option it follows (null before any option), for `--flag a b c` forms. */
  readonly after: readonly { readonly value: string; readonly option: string | null }[];
}

export interface ParseOptions {
  /** String options that are switches too: bare is `true`, `--no-NAME` is `false`. */
  readonly switches?: readonly string[];
  readonly allowPositionals?: boolean;
}

export function parseCommandLine(argv: readonly string[], options: Record<string, OptionSpec>, { switches = [], allowPositionals = false }: ParseOptions = {}): CommandLine {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : null;
    if (name !== null && switches.includes(name)) {
      const next = argv[i + 1];
      args.push(next === undefined || next.startsWith('-') ? `${arg}=true` : arg);
    } else if (name?.startsWith('no-') && switches.includes(name.slice(3))) {
      args.push(`--${name.slice(3)}=false`);
    } else {
      args.push(arg);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals, tokens: true });
  } catch (err) {
    throw new UsageError(describe(err as Error & { code?: string }, argv));
  }
  const after: { value: string; option: string | null }[] = [];
  let option: string | null = null;
  for (const token of parsed.tokens ?? []) {
    if (token.kind === 'option') option = token.rawName;
    else if (token.kind === 'positional') after.push({ value: token.value, option });
  }
  return { values: parsed.values as CommandLine['values'], positionals: parsed.positionals, after };
}

/** node:util's messages, said the way the commands say them. */
function describe(err: Error & { code?: string }, argv: readonly string[]): string {
  const named = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option '${argv.find((a) => a === named || a.startsWith(`${named}=`)) ?? named}' (see --help)`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /argument missing/.test(err.message) ? `option '${named}' needs a value` : `option '${named}' takes no value`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument '${/'([^']*)'/.exec(err.message)?.[1] ?? ''}'`;
    default:
      return err.message;
  }
}
