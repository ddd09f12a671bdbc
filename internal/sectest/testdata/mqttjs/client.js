'use strict';
// MQTT.js client for Isobar's end-to-end tests (internal/sectest): the way
// browsers and Node applications use MQTT over WebSocket.
//
//   node client.js URL [--ca FILE] [--v 4|5] [--id CLIENTID]
//                      [--sub TOPIC]... [--pub TOPIC=PAYLOAD]... [--expect N]
//
// Connects to URL (ws:// or wss://; without --ca, wss:// certificates are
// not verified), subscribes to every --sub topic at QoS 1, prints
// "subscribed", publishes every --pub message at QoS 1, prints
// "message TOPIC PAYLOAD" for each message received and exits 0 after N of
// them (default: one per --pub). Every failure prints "error ..." on stderr
// and exits 1; nothing within 15 s exits 2.
const fs = require('fs');
const mqtt = require('mqtt');

const args = process.argv.slice(2);
const url = args.shift();
const opts = { ca: null, v: 4, id: 'mqttjs-' + process.pid, subs: [], pubs: [], expect: -1 };
while (args.length > 0) {
  const k = args.shift();
  const v = args.shift();
  if (v === undefined) fail('missing value for ' + k);
  switch (k) {
    case '--ca': opts.ca = fs.readFileSync(v); break;
    case '--v': opts.v = Number(v); break;
    case '--id': opts.id = v; break;
    case '--sub': opts.subs.push(v); break;
    case '--pub': {
      const i = v.indexOf('=');
      if (i < 0) fail('--pub wants TOPIC=PAYLOAD');
      opts.pubs.push([v.slice(0, i), v.slice(i + 1)]);
      break;
    }
    case '--expect': opts.expect = Number(v); break;
    default: fail('unknown option ' + k);
  }
}
if (!url) fail('usage: node client.js URL [options]');
if (opts.expect < 0) opts.expect = opts.pubs.length;

function fail(msg) {
  process.stderr.write('error ' + msg + '\n');
  process.exit(1);
}

setTimeout(() => {
  process.stderr.write('error timeout\n');
  process.exit(2);
}, 15000).unref();

const client = mqtt.connect(url, {
  protocolVersion: opts.v,
  clientId: opts.id,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  ca: opts.ca || undefined,
  rejectUnauthorized: opts.ca !== null,
});

let received = 0;
let done = false;
function finish() {
  // After the acknowledgement of the last message has been written:
  // MQTT.js sends PUBACK right after emitting 'message'.
  done = true;
  setImmediate(() => client.end(false, {}, () => process.exit(0)));
}
client.on('error', (err) => {
  if (!done) fail(err.message);
});
client.on('close', () => {
  if (!done) fail('connection closed');
});
client.on('message', (topic, payload) => {
  process.stdout.write('message ' + topic + ' ' + payload.toString() + '\n');
  received++;
  if (received === opts.expect) finish();
});
client.on('connect', async () => {
  process.stdout.write('connected\n');
  try {
    if (opts.subs.length > 0) {
      const granted = await client.subscribeAsync(opts.subs, { qos: 1 });
      for (const g of granted) {
        if (g.qos > 2) fail('subscription to ' + g.topic + ' refused: ' + g.qos);
      }
    }
    process.stdout.write('subscribed\n');
    for (const [t, p] of opts.pubs) {
      await client.publishAsync(t, p, { qos: 1 });
    }
    if (opts.expect === 0) finish();
  } catch (err) {
    fail(err.message);
  }
});
