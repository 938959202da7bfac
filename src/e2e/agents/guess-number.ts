/**
 * Two scripted agents that play guess-the-number through the proxy, speaking the agent line
 * protocol (src/e2e/agent-host.ts, docs/e2e.md) like any external agent would:
 *
 *   node guess-number.js picker [--seed S] [--max N]   thinks of a number, answers higher/lower
 *   node guess-number.js guesser                       finds it by halving the range
 *
 * Each writes a `note` with its view of the result, which the orchestrator compares.
 */
import { createInterface } from 'node:readline';
import { hash, rng } from '../rng.js';

type Incoming = { type: 'start'; side: string; session: string } | { type: 'message'; content: string } | { type: 'closed' };

const out = (message: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};

function option(name: string, fallback: string): string {
  const index = process.argv.indexOf(name);
  return index === -1 ? fallback : (process.argv[index + 1] ?? fallback);
}

function picker(): (incoming: Incoming) => void {
  const max = Number(option('--max', '100'));
  let secret = 0;
  let guesses = 0;
  return (incoming) => {
    if (incoming.type === 'start') {
      secret = 1 + Math.floor(rng(hash(option('--seed', '1'), incoming.session))() * max);
      out({ type: 'note', role: 'picker', secret });
      out({ type: 'say', content: `I'm thinking of a whole number between 1 and ${max}. Guess it!` });
    } else if (incoming.type === 'message') {
      const guess = Number(/-?\d+/.exec(incoming.content)?.[0] ?? NaN);
      if (!Number.isFinite(guess)) return out({ type: 'say', content: `Please guess a whole number between 1 and ${max}.` });
      guesses++;
      if (guess < secret) out({ type: 'say', content: `Higher than ${guess}.` });
      else if (guess > secret) out({ type: 'say', content: `Lower than ${guess}.` });
      else {
        out({ type: 'note', role: 'picker', secret, guesses, won: true });
        out({ type: 'say', content: `Correct! It was ${secret}. You needed ${guesses} guesses.` });
      }
    } else {
      process.exit(0);
    }
  };
}

function guesser(): (incoming: Incoming) => void {
  let low = 1;
  let high = 100;
  let last = 0;
  let guesses = 0;
  const guess = () => {
    last = Math.floor((low + high) / 2);
    guesses++;
    out({ type: 'say', content: `Is it ${last}?` });
  };
  return (incoming) => {
    if (incoming.type === 'start') {
      out({ type: 'say', content: 'Ready to play guess-the-number.' }); // the handshake
    } else if (incoming.type === 'message') {
      const text = incoming.content;
      const range = /between (\d+) and (\d+)/i.exec(text);
      if (/correct/i.test(text)) {
        out({ type: 'note', role: 'guesser', guess: last, guesses, won: true });
        out({ type: 'end' });
        return;
      }
      if (range && guesses === 0) {
        low = Number(range[1]);
        high = Number(range[2]);
      } else if (/higher/i.test(text)) low = last + 1;
      else if (/lower/i.test(text)) high = last - 1;
      if (low > high) {
        out({ type: 'note', role: 'guesser', error: `the hints contradict each other: ${text}` });
        out({ type: 'end' });
        return;
      }
      guess();
    } else {
      process.exit(0);
    }
  };
}

const role = process.argv[2];
const handle = role === 'picker' ? picker() : role === 'guesser' ? guesser() : null;
if (!handle) {
  process.stderr.write('usage: guess-number.js picker|guesser [--seed S] [--max N]\n');
  process.exit(2);
}
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) handle(JSON.parse(line) as Incoming);
});
