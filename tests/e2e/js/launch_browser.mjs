// The one way the e2e scripts start a browser: Debian's chromium (no browser download), driven
// by playwright-core from this repository's node_modules, headless and quiet on the network.
//
//   import { launchBrowser } from "./launch_browser.mjs";
//   const browser = await launchBrowser(spec.chromium);
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "..", "package.json"));
const { chromium } = require("playwright-core");

export function launchBrowser(executablePath) {
  return chromium.launch({
    executablePath: executablePath || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}
