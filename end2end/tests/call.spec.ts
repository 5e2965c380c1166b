import path from 'node:path';
import { type Page } from '@playwright/test';
import {
  test, expect, connectedPair, expectMediaFlowing, expectMediaFlowingBothWays, expectRemoteVideoStopped, freshRoom, hangUp, inboundBytes, start, startServer, status,
  waitUntilServing, type Server,
} from './helpers';

test('media flows both ways when the first person waits for the second', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const bob = await open(`/call/${room}`);
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  await expect(alice.getByLabel('Your video')).toHaveJSProperty('muted', true);
  await start(bob);
  await expectMediaFlowingBothWays(alice, bob);
  // Start is not on screen during a call.
  await expect(alice.getByRole('button', { name: 'Start' })).toHaveCount(0);
});

test('it connects whoever starts first', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const bob = await open(`/call/${room}`);
  await start(bob);
  await expect(status(bob)).toHaveText(/Waiting for someone to join/);
  await start(alice);
  await expectMediaFlowingBothWays(alice, bob);
});

test('pressing Start on both sides at the same moment connects, round after round', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const bob = await open(`/call/${room}`);
  for (let round = 0; round < 3; round++) {
    await Promise.all([start(alice), start(bob)]);
    await expectMediaFlowingBothWays(alice, bob);
    await Promise.all([hangUp(alice), hangUp(bob)]);
    await expect(status(alice)).toHaveText('Call ended. Press Start to call again.');
    await expect(status(bob)).toHaveText('Call ended. Press Start to call again.');
  }
});

test('hang up ends the call on both sides, and both can start again without reloading', async ({ open }) => {
  const { alice, bob, room } = await connectedPair(open);

  await hangUp(alice);
  await expect(status(alice)).toHaveText('Call ended. Press Start to call again.');
  await expect(status(bob)).toHaveText(/The other person left/);
  await expectRemoteVideoStopped(bob);
  await expect(alice.getByLabel('Your video')).toHaveJSProperty('srcObject', null);
  // Alice's camera is really off: no live track left on her page.
  expect(await alice.evaluate(() => (window as any).__peerConnections.every((pc: RTCPeerConnection) => pc.connectionState === 'closed'))).toBe(true);

  await start(alice);
  await expectMediaFlowingBothWays(alice, bob);

  await hangUp(bob);
  await expect(status(alice)).toHaveText(/The other person left/);
  await start(bob);
  await expectMediaFlowingBothWays(alice, bob);
});

/** The camera and microphone tracks `page`'s browser has granted, by state. */
const grantedTracks = (page: Page) => page.evaluate(() => (window as unknown as { grantedStreams: MediaStream[] })
  .grantedStreams.flatMap((stream) => stream.getTracks().map((track) => `${track.kind} ${track.readyState}`)));

/** In the page: the browser grants the camera and microphone only after `delay` ms, as when
 * a person reads the permission prompt; the streams it grants are kept in `grantedStreams`. */
function slowCamera(delay: number) {
  const devices = navigator.mediaDevices;
  const grant = devices.getUserMedia.bind(devices);
  const granted: MediaStream[] = [];
  Object.assign(window, { grantedStreams: granted });
  devices.getUserMedia = async (constraints) => {
    await new Promise((resolve) => setTimeout(resolve, delay));
    const stream = await grant(constraints);
    granted.push(stream);
    return stream;
  };
}

test('the call connects while the newcomer\'s camera is still starting, and their video follows', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  // Bob's browser takes 8 s to grant the camera, as when a person reads the permission prompt.
  const bob = await open(`/call/${room}`, (page) => page.addInitScript(slowCamera, 8000));
  await start(bob);
  // Meanwhile the call is made: Alice is connected and told Bob sends nothing yet, Bob's page
  // says what it waits for, and Alice's video already reaches him.
  await expect(status(alice)).toHaveText('Connected.');
  await expect(alice.getByText("The other person's camera is off")).toBeVisible();
  await expect(status(bob)).toHaveText('Starting your camera and microphone…');
  await expect.poll(async () => (await inboundBytes(bob)).video, { timeout: 5_000 }).toBeGreaterThan(10_000);
  await expect(status(bob)).toHaveText('Starting your camera and microphone…');
  // There is nothing to mute or turn off yet (M does nothing either); Hang up works.
  for (const name of ['Mute', 'Camera off', 'Share screen']) await expect(bob.getByRole('button', { name })).toBeDisabled();
  await bob.keyboard.press('m');
  await expect(bob.getByRole('button', { name: 'Hang up' })).toBeEnabled();
  // Then his camera and microphone go onto the connection already made.
  await expect(status(bob)).toHaveText('Connected.', { timeout: 15_000 });
  await expect(alice.getByText("The other person's camera is off")).toBeHidden();
  await expect(alice.getByText('The other person is muted')).toBeHidden();
  await expect(bob.getByRole('button', { name: 'Mute' })).toBeEnabled();
  await expectMediaFlowingBothWays(alice, bob);
});

test('hanging up while the camera is still starting leaves the camera off, and the other side is told', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  await start(alice);
  const bob = await open(`/call/${room}`, (page) => page.addInitScript(slowCamera, 3000));
  await start(bob);
  await expect(status(alice)).toHaveText(/^(Connecting…|Connected\.)$/);
  await hangUp(bob);
  await expect(status(bob)).toHaveText('Call ended. Press Start to call again.');
  await expect(status(alice)).toHaveText(/The other person left/);
  // The browser grants the camera after the call ended: the page stops it at once.
  await expect.poll(() => grantedTracks(bob), { timeout: 10_000 }).toEqual(['audio ended', 'video ended']);
});

const previewNotice = 'Your camera is on so you can see yourself. No one else sees or hears you until you press Start.';

test('where the camera is already allowed, a person sees themselves before Start, unseen, and Start sends that camera', async ({ open }) => {
  const room = freshRoom();
  const bob = await open(`/call/${room}`);
  await start(bob);
  await expect(status(bob)).toHaveText(/Waiting for someone to join/);
  const alice = await open(`/call/${room}`, (page) => page.addInitScript(slowCamera, 0));
  // Her own view plays before Start, and the page says who sees it: she is not in the call.
  await expect.poll(() => alice.getByLabel('Your video').evaluate((v: HTMLVideoElement) => v.videoWidth > 0 && v.currentTime > 0))
    .toBe(true);
  await expect(alice.getByText(previewNotice)).toBeVisible();
  await expect(status(alice)).toHaveText('Press Start to join the call.');
  await expect(status(bob)).toHaveText(/Waiting for someone to join/);
  expect(await grantedTracks(alice)).toEqual(['audio live', 'video live']);

  await start(alice);
  await expectMediaFlowingBothWays(alice, bob);
  await expect(alice.getByText(previewNotice)).toBeHidden();
  // The call sent the camera turned on before Start: the browser was asked once.
  expect(await grantedTracks(alice)).toEqual(['audio live', 'video live']);
  await hangUp(alice);
  await expect.poll(() => grantedTracks(alice)).toEqual(['audio ended', 'video ended']);
  await expect(alice.getByLabel('Your video')).toHaveJSProperty('srcObject', null);
});

test('a camera that stopped while the person waited is asked for again at Start', async ({ open }) => {
  const room = freshRoom();
  const bob = await open(`/call/${room}`);
  await start(bob);
  const alice = await open(`/call/${room}`, (page) => page.addInitScript(slowCamera, 0));
  await expect(alice.getByText(/^Your camera is on/)).toBeVisible();
  // As when the camera is unplugged, or the permission taken back, before Start.
  await alice.evaluate(() => (window as unknown as { grantedStreams: MediaStream[] }).grantedStreams[0]
    .getVideoTracks()[0].stop());
  await start(alice);
  await expectMediaFlowingBothWays(alice, bob);
  expect(await grantedTracks(alice)).toEqual(['audio ended', 'video ended', 'audio live', 'video live']);
});

test('where the browser would ask first, the camera stays off until Start', async ({ open }) => {
  const room = freshRoom();
  // No remembered permission: the browser would prompt (this one answers yes, at Start).
  const alice = await open(`/call/${room}`, (page) => page.addInitScript(slowCamera, 0), { permissions: [] });
  await expect(alice.getByRole('button', { name: 'Start' })).toBeEnabled();
  expect(await alice.evaluate(() => navigator.permissions.query({ name: 'camera' as PermissionName }).then((s) => s.state)))
    .not.toBe('granted');
  // Time for a preview to have started, had the page asked for one.
  await alice.waitForTimeout(1_000);
  expect(await grantedTracks(alice)).toEqual([]);
  await expect(alice.getByText(previewNotice)).toBeHidden();

  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  expect(await grantedTracks(alice)).toEqual(['audio live', 'video live']);
});

test('reloading one side ends the call cleanly on the other, and Start reconnects', async ({ open }) => {
  const { alice, bob, room } = await connectedPair(open);

  await bob.reload();
  await expect(status(alice)).toHaveText(/The other person left/);
  await expectRemoteVideoStopped(alice);
  await expect(status(bob)).toHaveText('Press Start to join the call.');

  await start(bob);
  await expectMediaFlowingBothWays(alice, bob);
});

test('a plain JavaScript client following the classic tutorial calls the Leptos client', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);

  // Served from the app's own origin, as the tutorial's page would be.
  // (Playwright fulfils it, which Chromium's local-network checks treat as a public page: the
  // config turns those checks off.)
  const tutorial = await open(`/tutorial-client.html?room=${room}`, (page) =>
    page.route('**/tutorial-client.html*', (route) =>
      route.fulfill({ path: path.join(__dirname, '../fixtures/tutorial-client.html'), contentType: 'text/html' })));
  await expectMediaFlowing(alice);
  await expect.poll(() => tutorial.evaluate(() => {
    const video = document.getElementById('remote') as HTMLVideoElement;
    return video.videoWidth > 0 && video.currentTime > 0.5;
  }), { timeout: 20_000 }).toBe(true);
  const before = await inboundBytes(tutorial);
  await expect.poll(async () => (await inboundBytes(tutorial)).video).toBeGreaterThan(before.video + 1000);
});

// A server whose rooms hold two, as a small deployment may choose (the default is four).
test.describe('rooms of two', () => {
  const two = { origin: 'http://127.0.0.1:3111', server: undefined as Server | undefined };
  test.beforeAll(async () => {
    two.server = startServer(3111, '--max-room-size', '2');
    await waitUntilServing(two.server);
  });
  test.afterAll(() => { two.server?.kill('SIGKILL'); });

  test('a third person sees that the room is full while the call goes on', async ({ open }) => {
    const { alice, bob, room } = await connectedPair(open, two.origin);

    const carol = await open(`${two.origin}/call/${room}`);
    await start(carol);
    await expect(status(carol)).toHaveText("This call is full, so you can't join it.");
    await expect(carol.getByRole('button', { name: 'Start' })).toBeEnabled();
    await expect(carol.getByLabel('Your video')).toHaveJSProperty('srcObject', null);

    await expect(status(alice)).toHaveText('Connected.');
    await expectMediaFlowingBothWays(alice, bob);
  });

  test('a page opens its signaling socket before Start, and an open page takes no place in the call', async ({ open }) => {
    const room = freshRoom();
    const sockets: { url: string; sent: string[] }[] = [];
    // Carol only opens the page: her socket is open, but she is not in the call.
    const carol = await open(`${two.origin}/call/${room}`, async (page) => {
      page.on('websocket', (ws) => {
        const socket = { url: ws.url(), sent: [] as string[] };
        sockets.push(socket);
        ws.on('framesent', (frame) => socket.sent.push(String(frame.payload)));
      });
    });
    await expect.poll(() => sockets.length).toBe(1);
    expect(sockets[0].url).toContain('join=later');
    const { alice, bob } = await connectedPair(open, two.origin, two.origin, undefined, room);
    expect(sockets[0].sent).toEqual([]);
    // Start joins on the socket that was already open; the room is full.
    await start(carol);
    await expect(status(carol)).toHaveText("This call is full, so you can't join it.");
    expect(sockets[0].sent.map((frame) => JSON.parse(frame).message_type)).toEqual(['JOIN']);
    // The page has its socket ready for the next Start.
    await expect.poll(() => sockets.length).toBe(2);
    await expectMediaFlowingBothWays(alice, bob);
  });
});
