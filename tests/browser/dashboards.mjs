// Opens each dashboard in Debian's headless Chromium (playwright-core, no
// browser download) and reports what a person would see, for
// tests/tests/e2e.rs to compare with the JSON API and the ledger:
//
//   node dashboards.mjs OUT_DIR NAME=URL,API_PATH,AS_OF_KEY ...
//
// For each page: console errors and uncaught page errors; every figure on
// it (`data-key` -> `data-value`) and the JSON API fetched right after,
// again until both are of the same AS_OF_KEY value (at most 10 tries); a
// screenshot at desktop width and one at a phone's width (OUT_DIR/NAME.png,
// NAME-phone.png) and whether the phone page scrolls sideways; and whether
// the Refresh button updates the page without reloading it. Prints one
// JSON object on stdout.
import { chromium } from "playwright-core";

const [outDir, ...pages] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const report = {};
try {
  for (const spec of pages) {
    const [name, rest] = spec.split(/=(.*)/s);
    const [url, apiPath, asOfKey] = rest.split(",");
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    const figures = () => page.$$eval("[data-key]", (els) =>
      Object.fromEntries(els.map((e) => [e.dataset.key, e.dataset.value])));
    let values = {}, api = null, matched = false, tries = 0;
    while (!matched && tries < 10) {
      tries += 1;
      const response = await page.goto(url, { waitUntil: "load" });
      if (!response.ok()) { throw new Error(`${url}: HTTP ${response.status()}`); }
      values = await figures();
      // as text: amounts beyond 2^53 stay exact for the test to parse
      api = await page.evaluate(async (p) => (await fetch(p, { cache: "no-store" })).text(), apiPath);
      matched = String(values[asOfKey]) === String(JSON.parse(api)[asOfKey]);
    }
    await page.screenshot({ path: `${outDir}/${name}.png`, fullPage: true });
    // the live part is fetched again without a reload
    await page.evaluate(() => { window.__notReloaded = true; });
    await page.click("#refresh button");
    await page.waitForFunction(() => /^updated/.test(document.getElementById("updated").textContent), null, { timeout: 10000 });
    const refreshed = await page.evaluate(() => window.__notReloaded === true);
    const afterRefresh = await figures();
    // a phone's width
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(url, { waitUntil: "load" });
    const phoneOverflow = await page.evaluate(() =>
      document.documentElement.scrollWidth > window.innerWidth + 1);
    await page.screenshot({ path: `${outDir}/${name}-phone.png`, fullPage: true });
    // what assistive technology reads: every table column has a header
    // scope, every chart a label
    const unlabelled = await page.$$eval("svg", (els) => els.filter((e) => !e.getAttribute("aria-label")).length);
    report[name] = {
      consoleErrors, values, api, matched, tries, refreshed,
      figuresAfterRefresh: Object.keys(afterRefresh).length,
      phoneOverflow, unlabelledCharts: unlabelled,
      title: await page.title(),
    };
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
