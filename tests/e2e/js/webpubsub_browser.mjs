// Headless Chromium on webpubsub_page.html (the official @azure/web-pubsub-client): it negotiates
// with the Function App, joins a group; this script records every WebSocket frame the page
// receives, prints {"ready": true} once joined, waits for `expect` chat messages (then `quietMs`
// more), screenshots the page and the dashboard's Web PubSub table.
//
//   node tests/e2e/js/webpubsub_browser.mjs '{"pageUrl","dashboardUrl","hub","group","expect","quietMs","outDir","chromium"}'
// prints {"ready": true}, then {"ok", "frames": [...], "received": [...], "refused", "dashboardRow", "screenshots"}
import path from "node:path";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const browser = await launchBrowser(spec.chromium);
const result = { ok: false, frames: [], received: [], screenshots: [], step: "open" };
try {
  const page = await browser.newPage();
  page.on("websocket", (ws) => {
    ws.on("framereceived", (f) => result.frames.push({ url: ws.url().split("?")[0], payload: String(f.payload) }));
  });
  await page.goto(spec.pageUrl, { waitUntil: "load" });
  result.step = "join";
  await page.waitForFunction(() => window.state === "joined" || window.state === "failed", null, { timeout: 30000 });
  const failure = await page.evaluate(() => window.failure || null);
  if (failure) throw new Error(failure);
  result.refused = await page.evaluate(() => window.refused);
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  result.step = "receive";
  await page.waitForFunction((n) => window.received.length >= n, spec.expect, { timeout: 40000 });
  await page.waitForTimeout(spec.quietMs);
  result.received = await page.evaluate(() => window.received);
  const shot = path.join(spec.outDir, "webpubsub-client.png");
  await page.screenshot({ path: shot, fullPage: true });
  result.screenshots.push(shot);
  if (spec.dashboardUrl) {
    result.step = "dashboard";
    const dash = await browser.newPage();
    await dash.goto(spec.dashboardUrl, { waitUntil: "load" });
    const row = `#webpubsub tr[data-hub="${spec.hub}"]`;
    await dash.waitForSelector(row, { timeout: 15000 });
    result.dashboardRow = await dash.$eval(row, (tr) => ({
      connections: Number(tr.querySelector(".connections").textContent), groups: tr.querySelector(".groups").textContent,
    }));
    const dashShot = path.join(spec.outDir, "webpubsub-dashboard.png");
    await dash.screenshot({ path: dashShot, fullPage: true });
    result.screenshots.push(dashShot);
  }
  result.ok = true;
} catch (err) {
  result.error = String(err && err.message || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
