import { runRelay } from './loadgen.js';
const r = await runRelay({ kind: 'relay', url: process.argv[2]!, sessions: Number(process.argv[3]), turnsPerSession: 20, totalTurns: Number(process.argv[4]), stream: process.argv[5] === 'stream', messageBytes: 200, prefix: `p${process.pid}` });
console.log(JSON.stringify({ tps: Math.round(r.turnsPerSecond), lat: r.latency, errors: r.errors }));
process.exit(0);
