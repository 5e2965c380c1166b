// What the browser benchmarks share: the release server on a port of their own, Chromium, and
// the median.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from '@playwright/test';
import chromiumFlags from '../chromium.cjs';

const { chromiumArgs, executablePath } = chromiumFlags;

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Starts `target/release/duo` on `port` and waits until it answers; `stop()` ends it.
 * `DUO_BINARY` and `DUO_SITE` run another build instead (to compare two builds).
 */
export async function startServer(port) {
  const base = `http://127.0.0.1:${port}`;
  const binary = process.env.DUO_BINARY ?? path.join(root, 'target/release/duo');
  const site = process.env.DUO_SITE ?? path.join(root, 'target/site');
  const server = spawn(binary, ['--addr', `127.0.0.1:${port}`, '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn'], {
    env: { ...process.env, LEPTOS_SITE_ROOT: site },
    stdio: 'inherit',
  });
  const stop = () => server.kill('SIGTERM');
  for (let i = 0; ; i++) {
    try { if ((await fetch(base)).ok) break; } catch { /* not up yet */ }
    if (i > 100) { stop(); throw new Error('server did not start'); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { base, stop };
}

/** Debian's Chromium, headless, kept off the closed network; `args` adds flags. */
export const launchChromium = (...extra) => chromium.launch({
  executablePath,
  args: chromiumArgs({ extra }),
});

export const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  return sorted.length % 2 ? sorted[Math.floor(mid)] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Chromium with fake camera and microphone that plays media without a gesture. */
export const launchCallChromium = () => launchChromium('--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required');

/**
 * Starts watching, in the page itself as the floor's page does, for the call page's remote
 * video to play (a frame shown and its time moving). Call it before the click that is timed:
 * then nothing of the harness runs in the pages while the call sets up (a `waitForFunction`
 * begun after the click put 10-15 ms of script evaluation on both pages' main threads in the
 * middle of the negotiation, a cost the floor's page never paid).
 */
export const watchRemoteVideo = (page) => page.evaluate(() => {
  window.remoteVideoPlaying = new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error('no remote video played within 30 s')), 30_000);
    const check = () => {
      const video = document.querySelector('video.remote');
      if (video && video.videoWidth > 0 && video.currentTime > 0) resolve(performance.timeOrigin + performance.now());
      else requestAnimationFrame(check);
    };
    check();
  });
});

/** When the remote video watched for began to play, in epoch ms. */
export const remoteVideoPlaying = (page) => page.evaluate(() => window.remoteVideoPlaying);
