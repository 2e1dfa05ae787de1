// The tests' WHIP endpoint in front of a Janus of your own (docs/sfu.md):
//
//   node tests/sfu/whip-front.mjs [--janus ws://127.0.0.1:8188] [--room 1234] [--token T]
//                                 [--listen 127.0.0.1:7080]
//
// POST http://LISTEN/whip publishes into the VideoRoom room (which must take H.264 and Opus);
// the session's Location takes PATCH (trickle) and DELETE. Ctrl-C ends it. Needs `npm ci`
// here (janode).

import { startWhipFront } from './janus.mjs';

const options = { janus: 'ws://127.0.0.1:8188', room: '1234', token: '', listen: '127.0.0.1:7080' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, '');
  if (!(key in options) || argv[i + 1] === undefined) {
    console.error(`usage: whip-front.mjs [--janus URL] [--room N] [--token T] [--listen HOST:PORT]`);
    process.exit(2);
  }
  options[key] = argv[i + 1];
}
const at = options.listen.lastIndexOf(':');
const front = await startWhipFront({
  janusUrl: options.janus,
  room: Number(options.room),
  token: options.token,
  host: options.listen.slice(0, at).replace(/^\[|\]$/g, ''),
  port: Number(options.listen.slice(at + 1)),
});
console.log(`WHIP endpoint: ${front.url} (room ${options.room}${options.token ? ', bearer token' : ''})`);
process.once('SIGINT', async () => {
  await front.close();
  process.exit(0);
});
