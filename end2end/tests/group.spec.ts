import { type Page } from '@playwright/test';
import { test, expect, exited, freshRoom, hangUp, start, startServer, status, waitUntilServing, type Server } from './helpers';

// Calls of three and four, on a server of their own that holds four people a room.
const PORT = 3109;
let server: Server;
test.beforeAll(async () => {
  server = startServer(PORT, '--max-room-size', '4');
  await waitUntilServing(server);
});
test.afterAll(() => { server.kill('SIGKILL'); });

/** Small video, so that several pages' encoders and decoders fit two cores. */
const smallCamera = (page: Page) => page.addInitScript(() => {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints?: MediaStreamConstraints) => getUserMedia(
    constraints?.video === true || (constraints?.video && !(constraints.video as any).deviceId)
      ? { ...constraints, video: { width: 320, height: 240, frameRate: 15 } }
      : constraints,
  );
});

/** Each remote tile's video: its size and play time. */
const tiles = (page: Page) => page.evaluate(() => [...document.querySelectorAll('video.remote')].map((v) => {
  const video = v as HTMLVideoElement;
  return { label: video.getAttribute('aria-label'), width: video.videoWidth, time: video.currentTime };
}));

/** The cap on the video each live connection of `page` sends (`null`: none). */
const videoCaps = (page: Page) => page.evaluate(() => ((window as any).__peerConnections as RTCPeerConnection[])
  .filter((pc) => pc.connectionState === 'connected')
  .map((pc) => pc.getSenders().find((s) => s.track?.kind === 'video')?.getParameters().encodings[0]?.maxBitrate ?? null));

/** `page` shows `count` other people (within `timeout` ms), and every one of their videos plays. */
async function expectEveryoneVideoPlaying(page: Page, count: number, timeout = 30_000) {
  await expect.poll(async () => (await tiles(page)).filter((t) => t.width > 0).length, {
    timeout, message: `${count} remote videos with a size`,
  }).toBe(count);
  const before = await tiles(page);
  await expect.poll(async () => {
    const now = await tiles(page);
    return now.length === count && now.every((tile, i) => tile.time > before[i].time + 0.5);
  }, { timeout: 15_000, message: 'every remote video plays' }).toBe(true);
}

test('three people in a room each see and hear the other two, and two go on when one leaves', async ({ open }) => {
  const room = freshRoom();
  const url = `http://127.0.0.1:${PORT}/call/${room}`;
  const [alice, bob, carol] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for the other person/);
  await start(bob);
  await start(carol);
  for (const page of [alice, bob, carol]) {
    await expect(status(page)).toHaveText('Connected.');
    await expectEveryoneVideoPlaying(page, 2);
    const labels = (await tiles(page)).map((t) => t.label);
    expect(labels).toEqual(["Person 1's video", "Person 2's video"]);
    // Each of two connections sends half of what one call would (docs/protocol.md).
    await expect.poll(() => videoCaps(page)).toEqual([1_250_000, 1_250_000]);
  }
  await hangUp(carol);
  for (const page of [alice, bob]) {
    // Her BYE, not a connection timing out (that would take 30 s), takes her tile away.
    await expectEveryoneVideoPlaying(page, 1, 5_000);
    await expect(page.getByLabel("The other person's video")).toBeVisible();
    await expect(status(page)).toHaveText('Connected.');
    await expect.poll(() => videoCaps(page), { message: 'a call of two is not capped' }).toEqual([null]);
  }
});

test('three people pressing Start at the same moment all end up in one call', async ({ open }) => {
  const url = `http://127.0.0.1:${PORT}/call/${freshRoom()}`;
  const people = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await Promise.all(people.map(start));
  for (const page of people) await expectEveryoneVideoPlaying(page, 2);
});

test('four people fill a room: the fifth is told it is full, and the four keep their call', async ({ open }) => {
  test.setTimeout(120_000);
  const room = freshRoom();
  const url = `http://127.0.0.1:${PORT}/call/${room}`;
  const people: Page[] = [];
  for (let i = 0; i < 4; i++) {
    const page = await open(url, smallCamera);
    await start(page);
    people.push(page);
  }
  for (const page of people) await expectEveryoneVideoPlaying(page, 3);
  await expect.poll(() => videoCaps(people[0])).toEqual([833_333, 833_333, 833_333]);
  const eve = await open(url, smallCamera);
  await start(eve);
  await expect(status(eve)).toHaveText(/This call is full/);
  for (const page of people) await expect(status(page)).toHaveText('Connected.');
  await expectEveryoneVideoPlaying(people[0], 3);
});

test('a three-person call survives its signaling server being killed and restarted', async ({ open }) => {
  test.setTimeout(120_000);
  const port = 3110;
  let own = startServer(port, '--max-room-size', '4');
  try {
    await waitUntilServing(own);
    const url = `http://127.0.0.1:${port}/call/${freshRoom()}`;
    const people = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
    for (const page of people) await start(page);
    for (const page of people) await expectEveryoneVideoPlaying(page, 2);

    own.kill('SIGKILL');
    await exited(own);
    for (const page of people) await expect(status(page)).toHaveText(/Lost the connection to the server; reconnecting/);
    // Media goes browser to browser: it plays on while the server is gone.
    for (const page of people) await expectEveryoneVideoPlaying(page, 2);

    own = startServer(port, '--max-room-size', '4');
    await waitUntilServing(own);
    for (const page of people) await expect(status(page)).toHaveText('Connected.', { timeout: 20_000 });
    for (const page of people) await expectEveryoneVideoPlaying(page, 2);
    // And the room works again: one hangs up, the other two are told and go on.
    await hangUp(people[2]);
    for (const page of people.slice(0, 2)) await expectEveryoneVideoPlaying(page, 1, 5_000);
  } finally {
    own.kill('SIGKILL');
  }
});
