// What the floor of call-setup.mjs is made of: its page (two RTCPeerConnections wired
// directly, fake media) run as it is, with the negotiation held back 100 ms ("late
// negotiation"), and with the second side's tracks put on 100 ms after it ("late tracks"),
// printing when, after the second getUserMedia, each step happened and the first frame of each
// side arrived (requestVideoFrameCallback's receiveTime). Then getUserMedia alone, in a fresh
// page while another page holds the camera, as the second person's page meets it.
//
//   node end2end/bench/floor-variants.mjs [rounds]
import { launchCallChromium, median, startServer } from './common.mjs';

const rounds = Number(process.argv[2] ?? 5);

async function variant(kind) {
  const constraints = { audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const first = await navigator.mediaDevices.getUserMedia(constraints);
  const started = performance.now();
  const at = {};
  const mark = (step) => { at[step] ??= Math.round(performance.now() - started); };
  const second = await navigator.mediaDevices.getUserMedia(constraints);
  mark('getUserMedia');
  const [a, b] = [new RTCPeerConnection(), new RTCPeerConnection()];
  const videos = [a, b].map((pc, i) => {
    const video = Object.assign(document.createElement('video'), { autoplay: true, muted: true, playsInline: true });
    document.body.append(video);
    pc.ontrack = (event) => {
      video.srcObject ??= new MediaStream();
      video.srcObject.addTrack(event.track);
    };
    video.requestVideoFrameCallback((_, frame) => { at[`first frame at ${i ? 'b' : 'a'}`] = Math.round(frame.receiveTime - started); });
    pc.onconnectionstatechange = () => pc.connectionState === 'connected' && mark(`connected ${i ? 'b' : 'a'}`);
    return video;
  });
  a.onicecandidate = (event) => event.candidate && b.addIceCandidate(event.candidate);
  b.onicecandidate = (event) => event.candidate && a.addIceCandidate(event.candidate);
  for (const track of first.getTracks()) a.addTrack(track, first);
  if (kind === 'late tracks') {
    for (const kindOf of ['audio', 'video']) b.addTransceiver(kindOf, { direction: 'sendrecv' });
  } else {
    for (const track of second.getTracks()) b.addTrack(track, second);
  }
  if (kind === 'late negotiation') await sleep(100);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  mark('negotiated');
  if (kind === 'late tracks') {
    await sleep(100);
    mark('tracks on');
    const [audio, video] = b.getTransceivers().map((transceiver) => transceiver.sender);
    await Promise.all([audio.replaceTrack(second.getAudioTracks()[0]), video.replaceTrack(second.getVideoTracks()[0])]);
  }
  await new Promise((resolve) => {
    const check = () => (videos.every((v) => v.videoWidth > 0 && v.currentTime > 0) ? resolve() : requestAnimationFrame(check));
    check();
  });
  mark('both playing');
  for (const pc of [a, b]) pc.close();
  for (const track of [...first.getTracks(), ...second.getTracks()]) track.stop();
  for (const video of videos) video.remove();
  return at;
}

const { base, stop } = await startServer(3214);
try {
  const browser = await launchCallChromium();
  const page = await (await browser.newContext({ permissions: ['camera', 'microphone'] })).newPage();
  await page.goto(base);
  for (let round = 0; round < rounds; round++) {
    for (const kind of ['as it is', 'late negotiation', 'late tracks']) {
      const at = await page.evaluate(variant, kind);
      const steps = Object.entries(at).sort((x, y) => x[1] - y[1]).map(([step, ms]) => `${step} ${ms}`).join(', ');
      console.log(`${kind.padEnd(16)} ms after the second getUserMedia began: ${steps}`);
    }
  }
  // getUserMedia in a page of its own (a context each), while `page` holds the camera.
  await page.evaluate(() => navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
  const fresh = [];
  for (let round = 0; round < rounds; round++) {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const other = await context.newPage();
    await other.goto(base);
    fresh.push(await other.evaluate(async () => {
      const started = performance.now();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
      const took = performance.now() - started;
      for (const track of stream.getTracks()) track.stop();
      return Math.round(took);
    }));
    await context.close();
  }
  console.log(`getUserMedia in a fresh page: median ${median(fresh)} ms (${fresh.join(', ')})`);
  await browser.close();
} finally {
  stop();
}
