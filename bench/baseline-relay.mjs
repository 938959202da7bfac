// The benchmark's baseline: the least a pairing relay can do, on raw node:http. A session's
// first request is held (the handshake); every later request answers the held one with its
// last message and is held in turn. No validation, no attribution, no journal, no logs.
// usage: node bench/baseline-relay.mjs PORT
import { createServer } from 'node:http';

const held = new Map();
let next = 0;

function answer(target, model, content) {
  const id = `chatcmpl-${next++}`;
  const created = Math.floor(Date.now() / 1000);
  if (target.stream) {
    const chunk = (delta, finish) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    target.res.end(chunk({ role: 'assistant', content: '' }, null) + chunk({ content }, null) + chunk({}, 'stop') + 'data: [DONE]\n\n');
  } else {
    const message = { role: 'assistant', content };
    const body = JSON.stringify({ id, object: 'chat.completion', created, model, choices: [{ index: 0, message, finish_reason: 'stop' }] });
    target.res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  }
}

const server = createServer((req, res) => {
  if (req.method === 'GET') return void res.end(JSON.stringify({ status: 'ok', held: held.size }));
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const { model, messages, stream } = JSON.parse(body);
    const waiting = held.get(model);
    if (waiting) answer(waiting, model, messages[messages.length - 1].content);
    if (stream) res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
    held.set(model, { res, stream: stream === true });
  });
});
server.keepAliveTimeout = 120_000;
server.listen(Number(process.argv[2] ?? 8100), '127.0.0.1', () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
