// The framework floor: the baseline relay's logic (bench/baseline-relay.mjs) as a plain Fastify
// route, with Fastify's own JSON parsing and serialisation and nothing of the proxy's. Measured
// beside the baseline by `npm run bench -- --floors`, it shows what the web framework costs.
// usage: node bench/fastify-relay.mjs PORT
import Fastify from 'fastify';

const app = Fastify({ logger: false });
const held = new Map();
let next = 0;

app.get('/health', async () => ({ status: 'ok', held: held.size }));
app.post('/v1/chat/completions', (request, reply) => {
  const { model, messages } = request.body;
  const waiting = held.get(model);
  if (waiting) {
    const content = messages[messages.length - 1].content;
    waiting.send({ id: `chatcmpl-${next++}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] });
  }
  held.set(model, reply);
});
await app.listen({ port: Number(process.argv[2] ?? 8100), host: '127.0.0.1' });
process.stdout.write('listening\n');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
