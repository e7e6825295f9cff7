// Headless Chromium (Debian's chromium via playwright-core) on the dashboard's trace view: searches
// the chat message id, opens its trace, waits for the waterfall to show spans of every expected
// process, screenshots it into test-output/e2e/traces.png.
//
//   node tests/e2e/js/traces.mjs '{"tracesUrl","messageId","traceId","processes":[...],"outDir","chromium"}'
// prints {"ok", "listed", "rows", "processes", "title", "screenshot", "error"}
import path from "node:path";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const browser = await launchBrowser(spec.chromium);
const result = { ok: false, step: "start" };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  result.step = "open trace view";
  await page.goto(spec.tracesUrl, { waitUntil: "load" });
  result.step = "search the chat message id";
  await page.fill("#q", spec.messageId);
  await page.click("#search button");
  await page.waitForSelector(`#traces tr[data-trace="${spec.traceId}"]`, { timeout: 15000 });
  result.listed = await page.$$eval("#traces tr[data-trace]", (rows) => rows.map((r) => r.dataset.trace));
  await page.click(`#traces tr[data-trace="${spec.traceId}"]`);
  result.step = "waterfall shows every process";
  await page.waitForFunction(
    ([id, want]) => {
      const wf = document.getElementById("waterfall");
      if (wf.dataset.trace !== id) return false;
      const have = new Set([...wf.querySelectorAll(".row.span")].map((r) => r.dataset.instance));
      return want.every((p) => have.has(p));
    }, [spec.traceId, spec.processes], { timeout: 20000 });
  result.rows = await page.$$eval("#waterfall .row.span", (rows) => rows.map((r) => ({
    name: r.dataset.name, service: r.dataset.service, instance: r.dataset.instance,
    width: parseFloat(r.querySelector(".bar").style.width) })));
  result.processes = [...new Set(result.rows.map((r) => r.instance))];
  result.title = await page.textContent("#title");
  result.step = "screenshot";
  const shot = path.join(spec.outDir, "traces.png");
  await page.screenshot({ path: shot, fullPage: true });
  result.screenshot = shot;
  result.ok = true;
} catch (err) {
  result.error = String(err && err.message || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
