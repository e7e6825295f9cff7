// The official socket.io JS client, driven by a test through stdin/stdout (JSON lines).
//
//   node tests/js/chat_client.mjs <url> [--token JWT] [--transport websocket|polling] [--no-reconnect]
//
// stdout events: {"type":"connect","id"} {"type":"connect_error","message"} {"type":"disconnect","reason"}
//                {"type":"chat",...message} {"type":"ack","op","ack"} {"type":"event","event","args"}
// stdin commands: {"op":"join","room"} {"op":"leave","room"} {"op":"chat","room","text"} {"op":"who","room"}
//                 {"op":"exit"}
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "package.json"));
const { io } = require("socket.io-client");

const args = process.argv.slice(2);
const url = args[0];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const transport = opt("--transport");
const socket = io(url, {
  auth: opt("--token") ? { token: opt("--token") } : {},
  transports: transport ? [transport] : ["polling", "websocket"],
  reconnection: !args.includes("--no-reconnect"),
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  timeout: 5000,
});

socket.on("connect", () => out({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("chat", (m) => out({ type: "chat", ...m }));
socket.onAny((event, ...rest) => {
  if (event !== "chat") out({ type: "event", event, args: rest });
});

const rl = createInterface({ input: process.stdin });
rl.on("line", (text) => {
  let cmd;
  try {
    cmd = JSON.parse(text);
  } catch {
    out({ type: "bad_command", text });
    return;
  }
  if (cmd.op === "exit") {
    socket.disconnect();
    out({ type: "bye" });
    setTimeout(() => process.exit(0), 50);
    return;
  }
  const payload = cmd.op === "chat" ? { room: cmd.room, text: cmd.text } : cmd.room;
  socket.timeout(5000).emit(cmd.op, payload, (err, ack) => {
    out({ type: "ack", op: cmd.op, ack: err ? { error: String(err.message || err) } : ack });
  });
});
rl.on("close", () => {
  socket.disconnect();
  setTimeout(() => process.exit(0), 50);
});
