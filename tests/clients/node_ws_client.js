'use strict';
// Node's npm `ws` as a client: node node_ws_client.js URL
// Sends "hello", prints `echo: DATA` for each message and `closed: CODE` at the close, then exits.
const WebSocket = require('ws');

const socket = new WebSocket(process.argv[2], { perMessageDeflate: true });
socket.on('open', () => socket.send('hello'));
socket.on('message', (data) => process.stdout.write(`echo: ${data}\n`));
socket.on('close', (code) => process.stdout.write(`closed: ${code}\n`, () => process.exit(0)));
socket.on('error', (e) => { process.stderr.write(`error: ${e.message}\n`); process.exit(1); });
