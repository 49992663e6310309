'use strict';
// npm `ws` peer for sluice's WebSocket benchmarks; same interface as examples/websocket_echo:
//   node server.js [--port P] [--grace-ms G]
// prints `listening on 127.0.0.1:P`; a WebSocket at any path echoes every message (no
// compression); GET without an upgrade -> "Hello, world!\n" (run.py's warm-up).
// SIGTERM: Close 1001 to every client, then waits for each closing handshake; at the grace
// deadline terminate() the rest. SIGINT (or a second signal): terminate() every socket.
// Prints one JSON line {"event":"stopped",...} once every connection has ended, and exits 0.
const http = require('http');
const { WebSocketServer } = require('ws');

function arg(name, dflt) {
  const argv = process.argv.slice(2);
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? Number(argv[i + 1]) : dflt;
}
const port = arg('--port', 0);
const graceMs = arg('--grace-ms', 5000);

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '14' });
  res.end('Hello, world!\n');
});
server.keepAliveTimeout = 120000;
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: true });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

let stopping = null, t0 = 0n, completed = 0, forced = 0;
function finishWhenEmpty(mode) {
  const done = () => {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const line = JSON.stringify({ event: 'stopped', mode, ms: Math.round(ms * 1000) / 1000,
      idle_closed: 0, completed, forced, signal: mode === 'graceful' ? 15 : 2 });
    process.stdout.write(line + '\n', () => process.exit(0));
  };
  const check = () => { if (wss.clients.size === 0) { server.close(); done(); } };
  for (const ws of wss.clients) ws.on('close', check);
  check();
}

function onSignal(sig) {
  if (stopping === 'graceful' || (stopping === null && sig === 'SIGINT')) {
    const first = stopping === null;
    if (first) { stopping = 'now'; t0 = process.hrtime.bigint(); server.close(); }
    for (const ws of wss.clients) { forced++; ws.terminate(); }
    if (first) finishWhenEmpty('now');
    return;
  }
  if (stopping) return;
  stopping = 'graceful';
  t0 = process.hrtime.bigint();
  server.close();
  for (const ws of wss.clients) {
    ws.once('close', () => completed++);
    ws.close(1001, 'going away');
  }
  setTimeout(() => { for (const ws of wss.clients) { forced++; ws.terminate(); } }, graceMs).unref();
  finishWhenEmpty('graceful');
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});
