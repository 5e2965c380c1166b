// What a call page costs to open, in real Chromium (network measured through CDP):
// - bytes on the wire (encoded sizes from Network.loadingFinished) for a first visit and a
//   repeat visit in the same browser profile;
// - time from navigation to an enabled Start button, unthrottled and on a throttled link
//   (1.6 Mbit/s down, 750 kbit/s up, 150 ms round trip), against the floor: the same page's
//   server-rendered HTML and CSS alone on the same link (its scripts blocked), until `load`.
// The two are interleaved, so machine noise hits both. Prints medians; asserts nothing.
//
//   cargo leptos build --release --precompress && node end2end/bench/page-load.mjs [runs]
import { randomBytes } from 'node:crypto';
import { launchChromium, median, startServer } from './common.mjs';

const runs = Number(process.argv[2] ?? 5);
const links = {
  unthrottled: null,
  throttled: { offline: false, latency: 150, downloadThroughput: 1_600_000 / 8, uploadThroughput: 750_000 / 8 },
};

const { base, stop } = await startServer(3202);
/** A fresh profile whose page reports the bytes each load moves. */
async function openProfile(browser, link) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  if (link) await cdp.send('Network.emulateNetworkConditions', link);
  let bytes = 0;
  cdp.on('Network.loadingFinished', (event) => { bytes += event.encodedDataLength; });
  // A visit's bytes once its network is quiet: the tab's icon is asked for after the page has
  // loaded, often after Start is enabled, and belongs to the visit that asked for it.
  const takeBytes = async () => {
    await page.waitForLoadState('networkidle');
    const moved = bytes;
    bytes = 0;
    return moved;
  };
  return { context, page, takeBytes };
}

/** Navigates and waits until Start is enabled (the wasm has hydrated); ms since navigation. */
async function untilStart(page, url) {
  await page.goto(url, { waitUntil: 'commit' });
  return page.evaluate(() => new Promise((resolve) => {
    const check = () => {
      const start = [...document.querySelectorAll('button')].find((b) => b.textContent === 'Start');
      if (start && !start.disabled) resolve(performance.now());
      else requestAnimationFrame(check);
    };
    check();
  }));
}

/** The floor: the page's HTML and CSS alone (its scripts blocked), until `load`. */
async function htmlAlone(page, url) {
  await page.route('**/pkg/*.{js,wasm}', (route) => route.abort());
  await page.goto(url, { waitUntil: 'load' });
  const loaded = await page.evaluate(() => performance.getEntriesByType('navigation')[0].loadEventStart);
  await page.unroute('**/pkg/*.{js,wasm}');
  return loaded;
}

try {
  const browser = await launchChromium();
  const first = [], repeat = [];
  const times = { unthrottled: { app: [], floor: [] }, throttled: { app: [], floor: [] } };
  for (let run = 0; run < runs; run++) {
    for (const [name, link] of Object.entries(links)) {
      const url = `${base}/call/${randomBytes(12).toString('base64url')}`;
      const app = await openProfile(browser, link);
      times[name].app.push(await untilStart(app.page, url));
      if (name === 'unthrottled') {
        first.push(await app.takeBytes());
        await untilStart(app.page, url);
        repeat.push(await app.takeBytes());
      }
      await app.context.close();
      const floor = await openProfile(browser, link);
      times[name].floor.push(await htmlAlone(floor.page, url));
      await floor.context.close();
    }
  }
  await browser.close();
  console.log(`call page, ${runs} runs each (median):`);
  console.log(`  bytes on the wire: first visit ${median(first)} B, repeat visit ${median(repeat)} B`);
  for (const [name, { app, floor }] of Object.entries(times)) {
    const [a, f] = [median(app), median(floor)];
    console.log(`  ${name}: Start enabled after ${a.toFixed(0)} ms, HTML alone ${f.toFixed(0)} ms (${(a / f).toFixed(2)}x)`);
  }
  console.log(`RESULT first_bytes=${median(first)} repeat_bytes=${median(repeat)} ` +
    Object.entries(times).map(([name, { app, floor }]) => `${name}_ms=${median(app).toFixed(0)} ${name}_floor_ms=${median(floor).toFixed(0)}`).join(' '));
} finally {
  stop();
}
