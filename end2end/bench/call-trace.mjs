// One call setup under a Chromium trace: prints, for each call page's main thread, the tasks
// of 2 ms or more from the second Start until both remote videos play, each with its largest
// inner events. For finding what runs on the pages during setup, not for timing it (tracing
// slows everything). The whole trace goes to the path given, for chrome://tracing or Perfetto.
//
//   cargo leptos build --release --precompress && node end2end/bench/call-trace.mjs /tmp/trace.json
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { launchCallChromium, remoteVideoPlaying, startServer, watchRemoteVideo } from './common.mjs';

const out = process.argv[2] ?? '/tmp/duo-call-trace.json';
const categories = ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'blink', 'v8', 'toplevel', 'webrtc'];

const { base, stop } = await startServer(3216);
const browser = await launchCallChromium();
try {
  // The first call warms the browser up; the second is traced.
  for (const traced of [false, true]) {
    const room = randomBytes(12).toString('base64url');
    const pages = [];
    for (let p = 0; p < 2; p++) {
      const page = await (await browser.newContext({ permissions: ['camera', 'microphone'] })).newPage();
      await page.goto(`${base}/call/${room}`);
      pages.push(page);
    }
    const [first, second] = pages;
    await first.getByRole('button', { name: 'Start' }).click();
    await first.getByText(/Waiting for someone to join/).waitFor();
    await Promise.all(pages.map(watchRemoteVideo));
    if (traced) await browser.startTracing(undefined, { path: out, categories });
    await second.getByRole('button', { name: 'Start' }).click();
    await Promise.all(pages.map(remoteVideoPlaying));
    if (traced) await browser.stopTracing();
    for (const page of pages) await page.context().close();
  }
} finally {
  await browser.close();
  stop();
}

const events = JSON.parse(fs.readFileSync(out, 'utf8')).traceEvents;
const click = events.find((e) => e.name === 'EventDispatch' && e.args?.data?.type === 'click');
const mains = events.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.args.name === 'CrRendererMain');
for (const { pid, tid } of mains) {
  const slices = events.filter((e) => e.pid === pid && e.tid === tid && e.ph === 'X' && e.ts >= click.ts - 20_000);
  const tasks = slices.filter((e) => e.name === 'ThreadControllerImpl::RunTask');
  if (tasks.length === 0) continue;
  const busy = tasks.reduce((sum, t) => sum + (t.dur ?? 0), 0) / 1000;
  console.log(`\nrenderer ${pid}${pid === click.pid ? ' (the newcomer, who clicked)' : ''}: ${busy.toFixed(0)} ms of tasks`);
  for (const task of tasks.filter((t) => t.dur >= 2000)) {
    const inner = new Map();
    for (const e of slices) {
      if (e !== task && e.ts >= task.ts && e.ts + (e.dur ?? 0) <= task.ts + task.dur && e.dur >= 500) {
        inner.set(e.name, Math.max(inner.get(e.name) ?? 0, e.dur));
      }
    }
    const largest = [...inner].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([n, d]) => `${n} ${(d / 1000).toFixed(1)}`);
    console.log(`  ${((task.ts - click.ts) / 1000).toFixed(0).padStart(5)} ms  ${(task.dur / 1000).toFixed(1).padStart(5)} ms  ${largest.join(', ')}`);
  }
}
