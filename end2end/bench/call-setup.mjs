// Call setup time: from the second person's Start click until remote video plays on both
// sides, over N calls (default 10) in real Chromium with fake devices. Prints the median.
//
//   cargo leptos build --release && node end2end/bench/call-setup.mjs [calls]
//
// A benchmark, not a test: it asserts nothing about speed, it reports it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from '@playwright/test';

const calls = Number(process.argv[2] ?? 10);
const port = 3200;
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
const base = `http://127.0.0.1:${port}`;

const server = spawn(path.join(root, 'target/release/duo'), ['--addr', `127.0.0.1:${port}`, '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn'], {
  env: { ...process.env, LEPTOS_SITE_ROOT: path.join(root, 'target/site') },
  stdio: 'inherit',
});
try {
  for (let i = 0; ; i++) {
    try { if ((await fetch(base)).ok) break; } catch { /* not up yet */ }
    if (i > 100) throw new Error('server did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const playing = (page) => page.waitForFunction(() => {
    const video = document.querySelector('video.remote');
    return video.videoWidth > 0 && video.currentTime > 0;
  }, null, { polling: 'raf', timeout: 30_000 });

  const times = [];
  for (let i = 0; i < calls; i++) {
    const room = randomBytes(12).toString('base64url');
    const pages = [];
    for (let p = 0; p < 2; p++) {
      const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
      const page = await context.newPage();
      await page.goto(`${base}/call/${room}`);
      pages.push(page);
    }
    const [first, second] = pages;
    await first.getByRole('button', { name: 'Start' }).click();
    await first.getByText(/Waiting for the other person/).waitFor();
    const started = performance.now();
    await second.getByRole('button', { name: 'Start' }).click();
    await Promise.all([playing(first), playing(second)]);
    times.push(performance.now() - started);
    for (const page of pages) await page.context().close();
  }
  await browser.close();
  times.sort((a, b) => a - b);
  const median = times.length % 2 ? times[(times.length - 1) / 2] : (times[times.length / 2 - 1] + times[times.length / 2]) / 2;
  console.log(`call setup (second Start -> remote video playing on both sides), ${calls} calls:`);
  console.log(`  median ${median.toFixed(0)} ms, min ${times[0].toFixed(0)} ms, max ${times[times.length - 1].toFixed(0)} ms`);
} finally {
  server.kill('SIGTERM');
}
