// Headless Chromium (Debian's chromium via playwright-core) on the local stack's dashboard:
// waits for every node to show ready, chats through node a1's demo page (and follows its
// dashboard link), waits for the envelope rates to move and for a dead-lettered message, screenshots, kills one node by PID and
// times how long the dashboard takes to mark it down, screenshots again.
//
//   node tests/e2e/js/dashboard.mjs '{"dashboardUrl","chatUrl","chatNode","peerNode","killPid","killNode",
//                                      "nodes","room","deadLetterSubscription","outDir","chromium"}'
// prints {"ok", "readyNodes", "dashboardLink", "outSeen", "inSeen", "deadLetter", "secondsToDown", "downReason",
//         "regionsUp", "screenshots", "error"}
import path from "node:path";
import { launchBrowser } from "./launch_browser.mjs";

const spec = JSON.parse(process.argv[2]);
const browser = await launchBrowser(spec.chromium);
const result = { ok: false, screenshots: [], step: "start" };
const rate = (page, node, cls) => page.evaluate(
  ([n, c]) => Number(document.querySelector(`#nodes tr[data-node="${n}"] td.${c}`)?.textContent) || 0, [node, cls]);
try {
  const dash = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  result.step = "open dashboard";
  await dash.goto(spec.dashboardUrl, { waitUntil: "load" });
  result.step = "all nodes ready";
  await dash.waitForFunction(
    (n) => document.querySelectorAll('#nodes tr[data-state="ready"]').length === n, spec.nodes, { timeout: 20000 });
  result.readyNodes = await dash.$$eval('#nodes tr[data-state="ready"]', (rows) => rows.map((r) => r.dataset.node));
  result.regionsUp = await dash.$$eval('#regions .region[data-state="up"]', (els) => els.map((e) => e.dataset.region));
  result.subscriptions = await dash.$$eval("#regions tr[data-subscription]", (rows) => rows.map((r) => r.dataset.subscription));

  result.step = "chat page";
  const chat = await browser.newPage();
  await chat.goto(spec.chatUrl, { waitUntil: "load" });
  await chat.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: 15000 });
  result.dashboardLink = await chat.evaluate(() => {
    const p = document.getElementById("dashboard");
    return p && !p.hidden ? document.getElementById("dashboard-link").href : null;
  });
  await chat.fill("#room", spec.room);
  await chat.click("#join");
  await chat.waitForSelector("#messages li.system", { timeout: 10000 });

  result.step = "envelope counters move";
  result.outSeen = 0;
  result.inSeen = 0;
  const deadline = Date.now() + 30000;
  let sent = 0;
  while (Date.now() < deadline && !(result.outSeen > 0 && result.inSeen > 0)) {
    if (sent < 40) {                       // a bounded burst: one chat every 250 ms
      await chat.fill("#text", `dashboard e2e ${sent++}`);
      await chat.click("#send");
    }
    await dash.waitForTimeout(250);
    result.outSeen = Math.max(result.outSeen, await rate(dash, spec.chatNode, "out"));
    result.inSeen = Math.max(result.inSeen, await rate(dash, spec.peerNode, "in"));
  }
  result.sent = sent;
  if (spec.deadLetterSubscription) {       // the poison message the test sent, once dead-lettered
    result.step = "dead letter shows";
    const row = `#dead tr[data-subscription="${spec.deadLetterSubscription}"]`;
    await dash.waitForSelector(row, { timeout: 60000 });
    result.deadLetter = await dash.$eval(row, (tr) => [...tr.cells].map((td) => td.textContent));
  }
  await dash.waitForTimeout(1500);         // a few more points in the plots
  const before = path.join(spec.outDir, "dashboard.png");
  await dash.screenshot({ path: before, fullPage: true });
  result.screenshots.push(before);

  result.step = "kill a node";
  const killedAt = Date.now();
  process.kill(spec.killPid, "SIGKILL");
  await dash.waitForSelector(`#nodes tr[data-node="${spec.killNode}"][data-state="down"]`, { timeout: 15000 });
  result.secondsToDown = (Date.now() - killedAt) / 1000;
  result.downReason = await dash.textContent(`#nodes tr[data-node="${spec.killNode}"] .reason`);
  result.readyAfterKill = await dash.$$eval('#nodes tr[data-state="ready"]', (rows) => rows.map((r) => r.dataset.node));
  const after = path.join(spec.outDir, "dashboard-node-down.png");
  await dash.screenshot({ path: after, fullPage: true });
  result.screenshots.push(after);
  result.ok = true;
} catch (err) {
  result.error = String(err && err.message || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
