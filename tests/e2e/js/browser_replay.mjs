// Headless Chromium on the demo page's reconnect replay: page B (long-polling, its own browser
// context) goes offline, page A sends while B is away, B comes back, rejoins, gets a history token
// from its relay node over socket.io and reads what it missed from the Functions history API
// (cross-origin, with Authorization: Bearer — a real CORS preflight).
//
//   node tests/e2e/js/browser_replay.mjs '{"urlA","urlB","room","texts":[...],"outDir","chromium"}'
// prints {"ok": bool, "textsInB": [...], "systemInB": [...], "errorsInB": [...], "screenshots": [...]}
import path from "node:path";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const browser = await launchBrowser(spec.chromium);
const result = { ok: false, textsInB: [], systemInB: [], errorsInB: [], screenshots: [] };
const chatTexts = (page) => page.$$eval("#messages li.chat .text", (els) => els.map((e) => e.textContent));
const has = (page, text) => page.waitForFunction(
  (t) => [...document.querySelectorAll("#messages li.chat .text")].some((e) => e.textContent === t),
  text, { timeout: 20000 });
try {
  const contextA = await browser.newContext();
  const contextB = await browser.newContext();
  const pageA = await contextA.newPage();
  const pageB = await contextB.newPage();
  // page B opens with a login token in its URL: the page moves it out of the address bar
  for (const [page, url] of [[pageA, spec.urlA], [pageB, spec.urlB + "?polling=1&token=login-token-in-the-url"]]) {
    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: 15000 });
    await page.fill("#room", spec.room);
    await page.click("#join");
    await page.waitForSelector("#messages li.system", { timeout: 10000 });
  }
  const send = async (text) => {
    await pageA.fill("#text", text);
    await pageA.click("#send");
    await has(pageA, text);
  };
  result.urlB = pageB.url();
  await send("before");
  await has(pageB, "before");

  await contextB.setOffline(true);
  await pageB.waitForFunction(() => document.getElementById("status").textContent.startsWith("disconnected"), null, { timeout: 60000 });
  for (const text of spec.texts) await send(text);
  await contextB.setOffline(false);
  await pageB.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: 30000 });
  for (const text of spec.texts) await has(pageB, text);
  await pageB.waitForFunction(
    () => [...document.querySelectorAll("#messages li.system")].some((e) => e.textContent.includes("from history")),
    null, { timeout: 10000 });
  result.textsInB = await chatTexts(pageB);
  result.systemInB = await pageB.$$eval("#messages li.system", (els) => els.map((e) => e.textContent));
  result.errorsInB = await pageB.$$eval("#messages li.error", (els) => els.map((e) => e.textContent));
  result.ok = true;
  const file = path.join(spec.outDir, "page-replay.png");
  await pageB.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
} catch (err) {
  result.error = String(err && err.message || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
