'use strict';
// Node's http2 client through a graceful stop of the server: node h2_node_client.js URL
//
// Prints one line per event, for h2_node.py to check:
//   ready                      A's two requests have reached the server (see below)
//   goaway A|B CODE LAST       a GOAWAY frame on session A or B (its error code, last stream id)
//   close A|B                  the session has closed
//   slow STATUS BODY           the stream that was in flight when the stop began
//   refused RSTCODE            the request sent after the final GOAWAY
//   retried STATUS             that request again, on a new connection (once stdin says "retry")
// Session B is idle when the stop begins; session A has /slow in flight.
const http2 = require('http2');
const readline = require('readline');

const url = process.argv[2];
const log = (line) => process.stdout.write(`${line}\n`);

// One request: resolves with {status, body}; rejects with {rstCode, code} when the stream closes
// without a response (RST_STREAM, or refused because of a GOAWAY).
function get(session, path) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    let status = 0;
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (headers) => { status = headers[':status']; });
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve({ status, body }));
    req.on('error', (e) => reject({ rstCode: req.rstCode, code: e.code }));
    req.on('close', () => { if (!status) reject({ rstCode: req.rstCode, code: 'closed' }); });
    req.end();
  });
}

function watch(session, name) {
  session.on('goaway', (code, last) => log(`goaway ${name} ${code} ${last}`));
  session.on('close', () => log(`close ${name}`));
  session.on('error', () => {});  // reported through the requests and 'close'
}

async function main() {
  const a = http2.connect(url);
  const b = http2.connect(url);
  watch(a, 'A');
  watch(b, 'B');
  await get(b, '/');  // B is idle from now on
  // Both requests are written together, before any answer: once / is answered, the server has
  // read /slow too.
  const slow = get(a, '/slow?ms=5000');
  await get(a, '/');
  log('ready');
  // The test sends SIGTERM now. Blocking the event loop past the server's ping_timeout (2 s)
  // leaves the PING of the first GOAWAY unanswered, so the final GOAWAY is sent before the next
  // request below reaches the server (or before this client reads the GOAWAYs): that request
  // must be refused with REFUSED_STREAM, the code that tells a client it may retry elsewhere.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3500);
  const late = get(a, '/').then((r) => ({ served: r }), (e) => ({ refused: e }));
  const s = await slow;
  log(`slow ${s.status} ${s.body.trim()}`);
  const outcome = await late;
  if (outcome.served) {
    log(`late served ${outcome.served.status}`);
    return;
  }
  log(`refused ${outcome.refused.rstCode} ${outcome.refused.code}`);
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line !== 'retry') continue;
    const c = http2.connect(url);
    c.on('error', () => {});
    const r = await get(c, '/');
    log(`retried ${r.status}`);
    c.close();
    lines.close();
    break;
  }
}

main().catch((e) => {
  process.stderr.write(`error: ${JSON.stringify(e)} ${e && e.stack}\n`);
  process.exit(1);
});
