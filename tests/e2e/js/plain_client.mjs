// The official socket.io client in headless Chromium with nothing but its defaults: a blank page
// of the node's origin loads /socket.io.min.js and calls io() (no demo page script, no options,
// no reconnect logic of its own). Reports what the client sees, one JSON line each:
//   {"type":"connect","id","transport"} {"type":"disconnect","reason"} {"type":"connect_error","message"}
// and {"type":"ready"} once the page runs. Exits when stdin closes or gets a line "exit".
//
//   node tests/e2e/js/plain_client.mjs '{"url","chromium"}'
import { createInterface } from "node:readline";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const browser = await launchBrowser(spec.chromium);
let done = false;
async function finish() {
  if (done) return;
  done = true;
  await browser.close().catch(() => {});
  process.exit(0);
}
try {
  const page = await browser.newPage();
  await page.exposeFunction("report", (obj) => out(obj));
  await page.goto(spec.url + "/config.json", { waitUntil: "load" });
  await page.addScriptTag({ url: spec.url + "/socket.io.min.js" });
  await page.evaluate(() => {
    const socket = io();
    socket.on("connect", () => window.report({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name }));
    socket.on("disconnect", (reason) => window.report({ type: "disconnect", reason }));
    socket.on("connect_error", (err) => window.report({ type: "connect_error", message: err.message }));
  });
  out({ type: "ready" });
} catch (err) {
  out({ type: "error", message: String((err && err.message) || err) });
  await finish();
}
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => { if (line.trim() === "exit") finish(); });
rl.on("close", finish);
