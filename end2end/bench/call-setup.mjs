// Call setup time: from the second person's Start click until remote video plays on both
// sides, over N calls (default 10) in real Chromium with fake devices, against the floor: one
// page with two RTCPeerConnections wired directly, from the second getUserMedia until both
// remote videos play. The two are interleaved, so machine noise hits both. Prints medians.
//
//   cargo leptos build --release --precompress && node end2end/bench/call-setup.mjs [calls]
//
// A benchmark, not a test: it asserts nothing about speed, it reports it.
import { randomBytes } from 'node:crypto';
import { launchCallChromium, median, remoteVideoPlaying, startServer, watchRemoteVideo } from './common.mjs';

const calls = Number(process.argv[2] ?? 10);

/** The floor, run in a page: the browser's own work for a call, with no signaling at all. */
async function directCall() {
  const media = () => navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
  const first = await media(); // the first person's camera is on before the clock starts
  const started = performance.now();
  const second = await media();
  const [a, b] = [new RTCPeerConnection(), new RTCPeerConnection()];
  const videos = [a, b].map((pc) => {
    const video = Object.assign(document.createElement('video'), { autoplay: true, muted: true, playsInline: true });
    document.body.append(video);
    pc.ontrack = (event) => { video.srcObject = event.streams[0]; };
    return video;
  });
  a.onicecandidate = (event) => event.candidate && b.addIceCandidate(event.candidate);
  b.onicecandidate = (event) => event.candidate && a.addIceCandidate(event.candidate);
  for (const track of first.getTracks()) a.addTrack(track, first);
  for (const track of second.getTracks()) b.addTrack(track, second);
  // As in the app, the person who arrives second calls.
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await new Promise((resolve) => {
    const check = () => (videos.every((v) => v.videoWidth > 0 && v.currentTime > 0) ? resolve() : requestAnimationFrame(check));
    check();
  });
  const elapsed = performance.now() - started;
  for (const pc of [a, b]) pc.close();
  for (const track of [...first.getTracks(), ...second.getTracks()]) track.stop();
  for (const video of videos) video.remove();
  return elapsed;
}

const { base, stop } = await startServer(3200);
try {
  const browser = await launchCallChromium();

  const times = [], floors = [], steps = {};
  const floorPage = await (await browser.newContext({ permissions: ['camera', 'microphone'] })).newPage();
  await floorPage.goto(base);
  for (let i = 0; i < calls; i++) {
    floors.push(await floorPage.evaluate(directCall));
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
    await first.getByText(/Waiting for someone to join/).waitFor();
    // The newcomer returns to a site their browser lets use the camera: it shows before Start,
    // as the floor's page holds its camera. (A first visit, where the browser asks at Start,
    // starts the camera inside call setup; this does not measure that.)
    await second.getByText(/^Your camera is on/).waitFor();
    // The clock starts when the browser takes the click (the event's time), not when the
    // test harness begins to move the mouse.
    await second.evaluate(() => document.addEventListener('click', (event) => {
      window.pressedAt = performance.timeOrigin + event.timeStamp;
    }, { capture: true, once: true }));
    await Promise.all([watchRemoteVideo(first), watchRemoteVideo(second)]);
    await second.getByRole('button', { name: 'Start' }).click();
    const played = await Promise.all([remoteVideoPlaying(first), remoteVideoPlaying(second)]);
    const clickedAt = await second.evaluate(() => window.pressedAt);
    times.push(Math.max(...played) - clickedAt);
    // Where the time went: the engine's performance marks on both pages, from the click.
    for (const [who, page, at] of [['first', first, played[0]], ['second', second, played[1]]]) {
      const marks = await page.evaluate(() => performance.getEntriesByType('mark')
        .filter((m) => m.name.startsWith('duo:')).map((m) => [m.name.slice(4), performance.timeOrigin + m.startTime]));
      for (const [name, time] of [...marks, ['playing', at]]) {
        const key = `${who}: ${name}`;
        if ((steps[key] ??= []).length <= i) steps[key].push(time - clickedAt);
      }
    }
    for (const page of pages) await page.context().close();
  }
  await browser.close();
  const [app, floor] = [median(times), median(floors)];
  console.log(`call setup (second Start -> remote video playing on both sides), ${calls} calls:`);
  console.log(`  median ${app.toFixed(0)} ms, min ${Math.min(...times).toFixed(0)} ms, max ${Math.max(...times).toFixed(0)} ms`);
  console.log(`  floor (two peer connections in one page): median ${floor.toFixed(0)} ms (${(app / floor).toFixed(2)}x)`);
  console.log('  where the time goes, median ms after the second Start (engine marks, duo:*):');
  const ordered = Object.entries(steps).map(([step, values]) => [step, median(values)]).sort((a, b) => a[1] - b[1]);
  for (const [step, ms] of ordered) console.log(`    ${ms.toFixed(0).padStart(5)}  ${step}`);
  console.log(`RESULT setup_ms=${app.toFixed(0)} floor_ms=${floor.toFixed(0)}`);
} finally {
  stop();
}
