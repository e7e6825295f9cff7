// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core; no browser download)
// opens the demo page of two relay nodes, joins the same room on both, types a message in the
// first page and waits for it in the second. Saves a screenshot of each page.
//
//   node tests/e2e/js/browser_chat.mjs '{"urlA","urlB","room","text","outDir","chromium"}'
// prints {"ok": bool, "seenInB": [...texts], "statusA", "statusB", "screenshots": [...]}
import path from "node:path";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const browser = await launchBrowser(spec.chromium);
const result = { ok: false, seenInB: [], screenshots: [] };
try {
  const pageA = await browser.newPage();
  const pageB = await browser.newPage();
  for (const [page, url] of [[pageA, spec.urlA], [pageB, spec.urlB]]) {
    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: 15000 });
    await page.fill("#room", spec.room);
    await page.click("#join");
    await page.waitForSelector("#messages li.system", { timeout: 10000 });
  }
  result.statusA = await pageA.textContent("#status");
  result.statusB = await pageB.textContent("#status");
  await pageA.fill("#text", spec.text);
  await pageA.click("#send");
  await pageB.waitForFunction(
    (text) => [...document.querySelectorAll("#messages li.chat .text")].some((e) => e.textContent === text),
    spec.text,
    { timeout: 20000 },
  );
  result.seenInB = await pageB.$$eval("#messages li.chat", (els) => els.map((e) => ({ text: e.querySelector(".text").textContent, node: e.dataset.node, region: e.dataset.region })));
  result.ok = true;
  for (const [name, page] of [["page-a", pageA], ["page-b", pageB]]) {
    const file = path.join(spec.outDir, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    result.screenshots.push(file);
  }
} catch (err) {
  result.error = String(err && err.message || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
