/**
 * The clients' side of the cluster tests: a plain load balancer that knows nothing of sessions
 * (each request goes to a random running instance; a dead one cuts the connection, as nginx
 * would with no retry), and a conversation of two official OpenAI SDK clients through it,
 * which checks that each side received exactly what the other sent, in order.
 */
import { once, setMaxListeners } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import OpenAI from 'openai';
import type { Instance } from './instances.js';

export interface Balancer {
  readonly url: string;
  /** Requests it passed to each instance, by instance id. */
  readonly spread: Map<string, number>;
  close(): Promise<void>;
}

export async function startBalancer(instances: readonly Instance[], random: () => number = Math.random): Promise<Balancer> {
  const spread = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    // As a load balancer whose health checks skip an instance that does not answer.
    const running = instances.filter((i) => i.serving);
    if (running.length === 0) return void res.destroy();
    const target = running[Math.floor(random() * running.length)]!;
    spread.set(target.id, (spread.get(target.id) ?? 0) + 1);
    const upstream = httpRequest({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers }, (response) => {
      res.writeHead(response.statusCode ?? 502, response.headers);
      response.pipe(res);
      response.on('aborted', () => res.destroy());
      response.on('error', () => res.destroy());
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    spread,
    close: async () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

type Side = 'A' | 'B';

/** One controller for every call of a conversation (each SDK call listens to it while open). */
function abortable(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
type Message = { role: 'user' | 'assistant'; content: string };

/**
 * Two SDK clients in one session, taking turns: A's handshake, then B and A alternately, each
 * re-sending its whole history. An application retry (a new SDK call with the same messages)
 * follows an error the SDK's own retries did not mend, as chat applications do.
 */
export class Conversation {
  readonly sent: Record<Side, string[]> = { A: [], B: [] };
  readonly received: Record<Side, string[]> = { A: [], B: [] };
  readonly errors: string[] = [];
  private readonly history: Record<Side, Message[]> = { A: [], B: [] };
  private readonly client: OpenAI;

  constructor(
    baseUrl: string,
    readonly session: string,
    options: { maxRetries?: number; appRetries?: number } = {},
  ) {
    this.client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'unused', maxRetries: options.maxRetries ?? 4, timeout: 30_000 });
    this.appRetries = options.appRetries ?? 10;
  }

  private readonly appRetries: number;
  private readonly stopped = abortable();

  /** Gives up every call still open (the last one is held for a reply that never comes). */
  close(): void {
    this.stopped.abort();
  }

  /** Sends `text` as `side`'s next message; resolves with what the other side sent back. */
  private async say(side: Side, text: string): Promise<string> {
    this.history[side].push({ role: 'user', content: text });
    for (let attempt = 0; ; attempt++) {
      try {
        const completion = await this.client.chat.completions.create({ model: `${this.session}|${side}`, messages: this.history[side] }, { signal: this.stopped.signal });
        const content = completion.choices[0]?.message.content ?? '';
        this.history[side].push({ role: 'assistant', content });
        this.received[side].push(content);
        return content;
      } catch (error) {
        if (this.stopped.signal.aborted) throw error;
        this.errors.push(`${side}: ${error instanceof Error ? error.message : String(error)}`);
        if (attempt >= this.appRetries) throw error;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * `turns` messages after A's handshake, B first. `between` runs after each turn (a fault
   * injected at a known point of the conversation).
   */
  async run(turns: number, between?: (turn: number) => Promise<void>): Promise<void> {
    let waiting: Promise<string> = this.say('A', `${this.session} handshake`);
    let speaker: Side = 'B';
    for (let turn = 1; turn <= turns; turn++) {
      const text = `${this.session} ${speaker}${turn}`;
      this.sent[speaker].push(text);
      const next = this.say(speaker, text);
      await waiting;
      waiting = next;
      speaker = speaker === 'A' ? 'B' : 'A';
      if (between) await between(turn);
    }
    // The last message's receiver is answered by one more message of its own.
    const closing = `${this.session} ${speaker}-last`;
    this.sent[speaker].push(closing);
    const last = this.say(speaker, closing);
    await waiting;
    void last.catch(() => undefined);
  }
}
