'use strict';
// Node.js `http` peer for sluice's benchmarks; same interface as sluice's hello_server:
//   node server.js [--port P] [--grace-ms G] [--tls CERT KEY]
// With --tls: `https` on the PEM certificate chain CERT and key KEY (HTTP/1.1 only; the
// HTTP/2 peer is h2server.js).
// prints `listening on 127.0.0.1:P`; GET / -> "Hello, world!\n"; GET /slow?ms=X -> 200 after X ms.
// SIGINT (or a second signal): server.close() + closeAllConnections().
// SIGTERM: server.close() + closeIdleConnections(), closeAllConnections() at the deadline.
// Prints one JSON line {"event":"stopped",...} when server.close's callback ran (all
// connections ended) and exits 0.
const http = require('http');
const https = require('https');
const fs = require('fs');

function arg(name, dflt) {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name && i + 1 < argv.length) return Number(argv[i + 1]);
    if (argv[i].startsWith(name + '=')) return Number(argv[i].slice(name.length + 1));
  }
  return dflt;
}
const port = arg('--port', 0);
const graceMs = arg('--grace-ms', 5000);
const tlsAt = process.argv.indexOf('--tls');
const tls = tlsAt < 0 ? null
  : { cert: fs.readFileSync(process.argv[tlsAt + 1]), key: fs.readFileSync(process.argv[tlsAt + 2]) };

const HELLO = 'Hello, world!\n';
const HELLO_LEN = String(Buffer.byteLength(HELLO));
const sockets = new Set();     // open sockets
let stopping = null;           // null | 'graceful' | 'now'
let t0 = 0n;
let idleClosed = 0, completed = 0, forced = 0, forcing = false;

function reply(req, res) {
  // While draining, tell the client this is the last response on the connection; Node then
  // ends the socket after it (otherwise it would sit idle until the deadline).
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': HELLO_LEN };
  if (stopping) headers.Connection = 'close';
  res.writeHead(200, headers);
  res.end(HELLO);
  if (stopping) { completed++; req.socket._servedDuringStop = true; }
}

// A socket is busy while a response is attached to it (Node's own bookkeeping: no
// per-request listeners, so the bookkeeping costs nothing on the throughput path).
const busy = (sock) => sock._httpMessage != null;

const onRequest = (req, res) => {
  const url = req.url;
  if (url === '/') return reply(req, res);
  if (url.startsWith('/slow')) {
    const m = /[?&]ms=(\d+)/.exec(url);
    const ms = m ? Number(m[1]) : 0;
    const timer = setTimeout(() => reply(req, res), ms);
    res.on('close', () => clearTimeout(timer));
    return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
  res.end('not found\n');
};
const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest);
// Node 20 defaults: keepAliveTimeout 5 s (would close idle benchmark connections),
// headersTimeout 60 s, requestTimeout 300 s, checked every connectionsCheckingInterval (30 s).
server.keepAliveTimeout = 120000;
server.headersTimeout = 120000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;

// Over TLS, 'secureConnection' gives the TLS socket, the one a response is attached to.
server.on(tls ? 'secureConnection' : 'connection', (sock) => {
  sockets.add(sock);
  sock.on('close', () => {
    sockets.delete(sock);
    if (stopping === 'graceful' && !forcing && !sock._servedDuringStop && !busy(sock)) idleClosed++;
  });
});

function finish(mode) {
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const line = JSON.stringify({ event: 'stopped', mode, ms: Math.round(ms * 1000) / 1000,
    idle_closed: idleClosed, completed, forced });
  process.stdout.write(line + '\n', () => process.exit(0));
}

// Cut every connection. From the first signal: idle ones count as idle_closed and those with
// a request in progress as forced; from a second signal (graceful already running) all of
// the remaining ones count as forced.
function stopNow(second) {
  forcing = true;
  for (const s of sockets) {
    if (busy(s) || second) forced++;
    else idleClosed++;
  }
  server.closeAllConnections();
}

let deadline = null;
function onSignal(sig) {
  if (stopping === 'graceful') {           // second signal: cut now
    clearTimeout(deadline);
    stopNow(true);
    return;
  }
  if (stopping) return;
  t0 = process.hrtime.bigint();
  if (sig === 'SIGINT') {
    stopping = 'now';
    server.close(() => finish('now'));
    stopNow(false);
  } else {
    stopping = 'graceful';
    server.close(() => { clearTimeout(deadline); finish('graceful'); });
    server.closeIdleConnections();          // server.close() already does this in Node >= 19
    deadline = setTimeout(() => {
      forcing = true;
      forced = sockets.size;
      server.closeAllConnections();
    }, graceMs);
  }
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});
