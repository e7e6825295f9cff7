// The official socket.io JavaScript client (npm socket.io-client) on several relay nodes at once.
//
//   node tests/e2e/js/mesh.mjs '<json spec>'
//   spec: {"clients": [{"name","url","room"}], "waitMs": 6000, "binary": true}
//
// Every client joins its room, sends one chat message and (with binary) one `blob` of 256 bytes
// (0..255, then its index), then listens for waitMs. Prints one JSON object: for every client
// the chat texts and blob payload digests it received.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "..", "package.json"));
const { io } = require("socket.io-client");

const spec = JSON.parse(process.argv[2]);
const result = {};
const sockets = [];

function blobFor(index) {
  const bytes = new Uint8Array(257);
  for (let i = 0; i < 256; i++) bytes[i] = i;
  bytes[256] = index;
  return bytes;
}

const connectAll = spec.clients.map(
  (c, index) =>
    new Promise((resolve, reject) => {
      const socket = io(c.url, { transports: ["websocket"], reconnection: false, timeout: 5000 });
      result[c.name] = { chat: [], blobs: [], errors: [] };
      socket.on("chat", (m) => result[c.name].chat.push(m.text));
      socket.on("blob", (m) => {
        const buf = Buffer.from(m.payload);
        let ok = buf.length === 257;
        for (let i = 0; ok && i < 256; i++) ok = buf[i] === i;
        result[c.name].blobs.push({ from: buf[256], intact: ok, node: m.node, region: m.region });
      });
      socket.on("connect_error", (err) => reject(new Error(`${c.name}: ${err.message}`)));
      socket.on("connect", async () => {
        const ack = await socket.timeout(5000).emitWithAck("join", c.room);
        if (!ack || ack.ok === false) result[c.name].errors.push({ join: ack });
        sockets.push({ socket, c, index });
        resolve();
      });
    }),
);

await Promise.all(connectAll);
await new Promise((r) => setTimeout(r, 500));
for (const { socket, c, index } of sockets) {
  await socket.timeout(5000).emitWithAck("chat", { room: c.room, text: `hello from ${c.name}` });
  if (spec.binary) await socket.timeout(5000).emitWithAck("blob", { room: c.room, payload: blobFor(index) });
}
await new Promise((r) => setTimeout(r, spec.waitMs ?? 6000));
for (const { socket } of sockets) socket.disconnect();
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
