'use strict';
// Node.js `http2` peer for sluice's HTTP/2 benchmarks; same interface as sluice's hello_server:
//   node h2server.js [--port P] [--grace-ms G] [--tls CERT KEY]
// Plain: h2c by prior knowledge (http2.createServer), what h2load and loadgen --h2 speak.
// --tls: h2 by ALPN (createSecureServer; no HTTP/1.1 fallback: a 'request' listener would put
// Node's compatibility objects on every stream, a cost the other servers do not pay).
// GET / -> "Hello, world!\n"; GET /slow?ms=X -> 200 after X ms.
// SIGINT (or a second signal): every session destroyed. SIGTERM: server.close() and
// session.close() on every session (GOAWAY, open streams complete), destroy at the deadline.
// Prints one JSON line {"event":"stopped",...} when the last session ended and exits 0.
const http2 = require('http2');
const fs = require('fs');

const argv = process.argv.slice(2);
const arg = (name, dflt) => { const i = argv.indexOf(name); return i < 0 ? dflt : argv[i + 1]; };
const port = Number(arg('--port', 0));
const graceMs = Number(arg('--grace-ms', 5000));
const tlsAt = argv.indexOf('--tls');

const HELLO = 'Hello, world!\n';
const HEADERS = { ':status': 200, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(HELLO) };
const sessions = new Set();
let stopping = null;           // null | 'graceful' | 'now'
let t0 = 0n;
let idleClosed = 0, completed = 0, forced = 0;

function reply(stream) {
  if (stream.destroyed) return;
  stream.respond(HEADERS);
  stream.end(HELLO);
  if (stopping) completed++;
}

function onStream(stream, headers) {
  const path = headers[':path'] || '';
  if (path === '/') return reply(stream);
  if (path.startsWith('/slow')) {
    const m = /[?&]ms=(\d+)/.exec(path);
    const timer = setTimeout(() => reply(stream), m ? Number(m[1]) : 0);
    // Only /slow streams outlive the tick they arrived in, so only they are counted as open.
    const session = stream.session;
    session.slowOpen = (session.slowOpen || 0) + 1;
    stream.on('close', () => { clearTimeout(timer); session.slowOpen--; });
    return;
  }
  stream.respond({ ':status': 404, 'content-length': 10 });
  stream.end('not found\n');
}

// Node's defaults: 100 concurrent streams as sluice; no idle timeout (as for the HTTP/1.1 peer).
const server = tlsAt < 0 ? http2.createServer()
  : http2.createSecureServer({ cert: fs.readFileSync(argv[tlsAt + 1]), key: fs.readFileSync(argv[tlsAt + 2]) });
server.on('stream', onStream);
server.on('session', (session) => {
  sessions.add(session);
  session.on('close', () => {
    sessions.delete(session);
    maybeFinish();
  });
});

function maybeFinish() {
  if (!stopping || sessions.size > 0 || !serverClosed) return;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const line = JSON.stringify({ event: 'stopped', mode: stopping, ms: Math.round(ms * 1000) / 1000,
    idle_closed: idleClosed, completed, forced });
  process.stdout.write(line + '\n', () => process.exit(0));
}

let serverClosed = false, deadline = null;
const busy = (s) => (s.slowOpen || 0) > 0;
function destroyAll(first) {
  for (const s of sessions) {
    if (busy(s) || !first) forced++;
    else idleClosed++;
    s.destroy();
  }
}

function onSignal(sig) {
  if (stopping === 'graceful') { clearTimeout(deadline); destroyAll(false); return; }
  if (stopping) return;
  t0 = process.hrtime.bigint();
  stopping = sig === 'SIGINT' ? 'now' : 'graceful';
  server.close(() => { serverClosed = true; maybeFinish(); });
  if (stopping === 'now') {
    destroyAll(true);
  } else {
    for (const s of sessions) {
      if (!busy(s)) idleClosed++;
      s.close();               // GOAWAY; the session ends when its open streams have
    }
    deadline = setTimeout(() => destroyAll(false), graceMs);
  }
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});
