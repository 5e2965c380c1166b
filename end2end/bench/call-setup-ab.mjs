// Call setup of several front-end builds (or one build under several styles), interleaved call
// by call so that machine noise hits all alike: for each, the median time from the second
// Start to remote video playing on both sides, and the median CPU time all Chromium processes
// spent meanwhile (less sensitive to a noisy machine than the time). For comparing changes;
// call-setup.mjs is the benchmark against the floor.
//
//   cp -r target/site /tmp/site-before   # then change, rebuild, and:
//   node end2end/bench/call-setup-ab.mjs 10 /tmp/site-before target/site
//   STYLES='["", "video.local { display: none }"]' node end2end/bench/call-setup-ab.mjs 10 target/site target/site
//
// STYLES: a CSS text per site (index), injected into both pages; INIT: a script run in the
// pages of the second site before the app's (a probe, say a wrapper of a browser API).
import { execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { launchCallChromium, median, remoteVideoPlaying, startServer, watchRemoteVideo } from './common.mjs';

const calls = Number(process.argv[2] ?? 10);
const sites = process.argv.slice(3);
if (sites.length === 0) throw new Error('usage: call-setup-ab.mjs CALLS SITE [SITE...]');
const styles = process.env.STYLES ? JSON.parse(process.env.STYLES) : [];
const tick = 1000 / Number(execSync('getconf CLK_TCK'));
/** CPU time of every Chromium process so far, in ms. */
const chromiumCpu = () => execSync('for p in $(pgrep -f chromium); do cat /proc/$p/stat 2>/dev/null; done')
  .toString().split('\n').filter(Boolean)
  .reduce((sum, line) => { const f = line.slice(line.lastIndexOf(')') + 2).split(' '); return sum + Number(f[11]) + Number(f[12]); }, 0) * tick;

const servers = [];
for (const [i, site] of sites.entries()) {
  process.env.DUO_SITE = site;
  servers.push(await startServer(3210 + i));
}
try {
  const browser = await launchCallChromium();
  const times = sites.map(() => []), cpus = sites.map(() => []);
  for (let i = 0; i < calls; i++) {
    const order = sites.map((_, k) => k);
    if (i % 2) order.reverse();
    for (const k of order) {
      const room = randomBytes(12).toString('base64url');
      const pages = [];
      for (let p = 0; p < 2; p++) {
        const context = await browser.newContext({ permissions: ['camera', 'microphone'], bypassCSP: true });
        const page = await context.newPage();
        if (process.env.INIT && k === 1) await page.addInitScript({ content: process.env.INIT });
        await page.goto(`${servers[k].base}/call/${room}`);
        if (styles[k]) await page.addStyleTag({ content: styles[k] });
        pages.push(page);
      }
      const [first, second] = pages;
      await first.getByRole('button', { name: 'Start' }).click();
      await first.getByText(/Waiting for someone to join/).waitFor();
      await new Promise((resolve) => setTimeout(resolve, 300));
      await second.evaluate(() => document.addEventListener('click', (event) => {
        window.pressedAt = performance.timeOrigin + event.timeStamp;
      }, { capture: true, once: true }));
      await Promise.all([watchRemoteVideo(first), watchRemoteVideo(second)]);
      const cpuBefore = chromiumCpu();
      await second.getByRole('button', { name: 'Start' }).click();
      const played = await Promise.all([remoteVideoPlaying(first), remoteVideoPlaying(second)]);
      cpus[k].push(chromiumCpu() - cpuBefore);
      times[k].push(Math.max(...played) - await second.evaluate(() => window.pressedAt));
      for (const page of pages) await page.context().close();
    }
  }
  await browser.close();
  for (const [k, site] of sites.entries()) {
    console.log(`${k} ${site}${styles[k] ? ` + ${styles[k]}` : ''}: median ${median(times[k]).toFixed(0)} ms,`
      + ` Chromium CPU ${median(cpus[k]).toFixed(0)} ms (${calls} calls)`);
  }
} finally {
  for (const server of servers) server.stop();
}
