import { type Page } from '@playwright/test';
import { PORT } from '../ports';
import * as people from './people';
import { chromiumPerson, inboundStat } from './people';
import { test, expect, connectedPair, expectMediaFlowing, freshRoom, start, status, withCameraDenied, openPanel } from './helpers';

const statsValue = (page: Page, kind: 'audio' | 'video', field: string) => inboundStat(chromiumPerson(page), kind, field);
const growth = (page: Page, kind: 'audio' | 'video', field: string, ms?: number) => people.growth(chromiumPerson(page), kind, field, ms);

test('mute silences the audio the other side receives and shows it there', async ({ open }) => {
  const { alice, bob } = await connectedPair(open);
  const mute = alice.getByRole('button', { name: 'Mute' });
  await expect(mute).toHaveAttribute('title', /\(M\)/);
  expect(await growth(bob, 'audio', 'totalAudioEnergy')).toBeGreaterThan(0);

  await mute.click();
  await expect(mute).toHaveAttribute('aria-pressed', 'true');
  await expect(bob.getByText('The other person is muted')).toBeVisible();
  await expect.poll(() => growth(bob, 'audio', 'totalAudioEnergy'), { timeout: 10_000 }).toBe(0);

  // The keyboard shortcut unmutes; sound is back.
  await alice.keyboard.press('m');
  await expect(mute).toHaveAttribute('aria-pressed', 'false');
  await expect(bob.getByText('The other person is muted')).toBeHidden();
  await expect.poll(() => growth(bob, 'audio', 'totalAudioEnergy'), { timeout: 10_000 }).toBeGreaterThan(0);
});

test('camera off stops the frames the other side receives and shows a placeholder', async ({ open }) => {
  const { alice, bob } = await connectedPair(open);
  const cameraOff = alice.getByRole('button', { name: 'Camera off' });
  await expect(cameraOff).toHaveAttribute('title', /\(V\)/);
  await cameraOff.click();
  await expect(bob.getByText("The other person's camera is off")).toBeVisible();
  await expect.poll(() => growth(bob, 'video', 'framesDecoded'), { timeout: 10_000 }).toBe(0);

  await alice.keyboard.press('v');
  await expect(cameraOff).toHaveAttribute('aria-pressed', 'false');
  await expect(bob.getByText("The other person's camera is off")).toBeHidden();
  await expect.poll(() => growth(bob, 'video', 'framesDecoded'), { timeout: 10_000 }).toBeGreaterThan(5);
});

test('before Start, Mute and Camera off choose how a person joins, and work in the call as ever', async ({ open }) => {
  const room = freshRoom();
  const bob = await open(`/call/${room}`);
  await start(bob);
  await expect(status(bob)).toHaveText(/Waiting for someone to join/);
  const alice = await open(`/call/${room}`);
  const [mute, cameraOff] = ['Mute', 'Camera off'].map((name) => alice.getByRole('button', { name }));
  await expect(alice.getByText(/^Your camera is on so you can see yourself\./)).toBeVisible();
  // Share screen waits for the call (it is not on the join screen); the mouse and the keys
  // work for the other two.
  await expect(alice.getByRole('button', { name: 'Share screen' })).toHaveCount(0);
  await cameraOff.click();
  await alice.keyboard.press('m');
  await expect(cameraOff).toHaveAttribute('aria-pressed', 'true');
  await expect(mute).toHaveAttribute('aria-pressed', 'true');
  await expect(alice.getByText('Your camera is off. No one else sees or hears you until you press Start.')).toBeVisible();
  const viewTracks = () => alice.getByLabel('Your video').evaluate((v: HTMLVideoElement) =>
    (v.srcObject as MediaStream).getTracks().map((t) => t.kind).sort());
  expect(await viewTracks()).toEqual(['audio']);

  await start(alice);
  await expect(status(bob)).toHaveText('Connected.');
  await expect(bob.getByText("The other person's camera is off")).toBeVisible();
  await expect(bob.getByText('The other person is muted')).toBeVisible();
  await expect(cameraOff).toHaveAttribute('aria-pressed', 'true');
  await expect(mute).toHaveAttribute('aria-pressed', 'true');
  await expect.poll(() => growth(bob, 'video', 'framesDecoded'), { timeout: 10_000 }).toBe(0);
  await expect.poll(() => growth(bob, 'audio', 'totalAudioEnergy'), { timeout: 10_000 }).toBe(0);

  await cameraOff.click();
  await mute.click();
  await expect(bob.getByText("The other person's camera is off")).toBeHidden();
  await expect(bob.getByText('The other person is muted')).toBeHidden();
  expect(await viewTracks()).toEqual(['audio', 'video']);
  await expect.poll(() => growth(bob, 'video', 'framesDecoded'), { timeout: 10_000 }).toBeGreaterThan(5);
  await expect.poll(() => growth(bob, 'audio', 'totalAudioEnergy'), { timeout: 10_000 }).toBeGreaterThan(0);
});

/** The label of the track `page` sends as video. */
const sentVideoLabel = (page: Page) => page.evaluate(() => {
  const newest: RTCPeerConnection = (window as any).__newestPeerConnection();
  return newest.getSenders().find((s) => s.track?.kind === 'video')?.track?.label ?? null;
});

test('screen sharing replaces the camera on the other side, and stopping brings the camera back', async ({ open }) => {
  const { alice, bob } = await connectedPair(open);
  const camera = await sentVideoLabel(alice);
  const share = alice.getByRole('button', { name: 'Share screen' });
  await share.click();
  await expect(share).toHaveAttribute('aria-pressed', 'true');
  await expect(bob.getByText('The other person is sharing their screen')).toBeVisible();
  await expect.poll(() => sentVideoLabel(alice)).toMatch(/^screen:/);
  // The screen is captured at 15 frames a second, the camera at 30: the other side sees it.
  await expect.poll(() => statsValue(bob, 'video', 'framesPerSecond'), { timeout: 15_000 }).toBeLessThanOrEqual(16);
  expect(await growth(bob, 'video', 'framesDecoded')).toBeGreaterThan(5);

  await share.click();
  await expect(bob.getByText('The other person is sharing their screen')).toBeHidden();
  await expect.poll(() => sentVideoLabel(alice)).toBe(camera);
  await expect.poll(() => statsValue(bob, 'video', 'framesPerSecond'), { timeout: 15_000 }).toBeGreaterThan(24);
  await expectMediaFlowing(bob);
});

test('chat messages arrive with sender and time, also when sent before the connection is up', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const bob = await open(`/call/${room}`);
  await start(alice);
  await start(bob);
  await openPanel(alice, 'Chat');
  await openPanel(bob, 'Chat');
  // Straight after Start: the data channel cannot be open yet.
  await bob.getByLabel('Message').fill('hello, early bird');
  await bob.getByLabel('Message').press('Enter');
  await expect(bob.getByLabel('Message')).toHaveValue('');
  const received = alice.getByRole('region', { name: 'Chat' }).getByRole('listitem');
  await expect(received).toHaveCount(1);
  await expect(received).toContainText('Them');
  await expect(received).toContainText('hello, early bird');
  await expect(received.locator('time')).toHaveText(/^\d\d:\d\d$/);

  await alice.getByLabel('Message').fill('hi!');
  await alice.getByRole('button', { name: 'Send' }).click();
  const bobs = bob.getByRole('region', { name: 'Chat' }).getByRole('listitem');
  await expect(bobs).toHaveCount(2);
  await expect(bobs.nth(0)).toContainText('You');
  await expect(bobs.nth(1)).toContainText('Them');
  await expect(bobs.nth(1)).toContainText('hi!');
});

test('switching the microphone mid-call keeps the call up and sends the new device', async ({ open }) => {
  const { alice, bob } = await connectedPair(open);
  await openPanel(alice, 'More');
  const microphone = alice.getByRole('combobox', { name: 'Microphone' });
  await expect(microphone.locator('option')).not.toHaveCount(0);
  await microphone.selectOption({ label: 'Fake Audio Input 1' });
  await expect.poll(() => alice.evaluate(() => {
    const newest: RTCPeerConnection = (window as any).__newestPeerConnection();
    return newest.getSenders().find((s) => s.track?.kind === 'audio')?.track?.label;
  })).toBe('Fake Audio Input 1');
  await expect(status(alice)).toHaveText('Connected.');
  await expectMediaFlowing(bob);
  await expect.poll(() => growth(bob, 'audio', 'totalAudioEnergy'), { timeout: 10_000 }).toBeGreaterThan(0);
});

test('without camera permission the page says so, and audio only still connects', async ({ open }) => {
  const room = freshRoom();
  const bob = await open(`/call/${room}`);
  await start(bob);
  await withCameraDenied(async (carol) => {
    await carol.goto(`http://127.0.0.1:${PORT}/call/${room}`);
    await start(carol);
    await expect(status(carol)).toHaveText(/Camera or microphone unavailable: permission was denied/);
    await carol.getByRole('button', { name: 'Join with audio only' }).click();
    await expect(status(carol)).toHaveText('Connected.');
    await expect(status(bob)).toHaveText('Connected.');
    await expect(bob.getByText("The other person's camera is off")).toBeVisible();
    await expect(bob.getByText('The other person is muted')).toBeHidden();
    // Carol's audio arrives. (Chromium's fake microphone beeps only while its fake camera
    // runs, so here it sends silence: packets, not energy.)
    await expect.poll(() => growth(bob, 'audio', 'packetsReceived', 3000), { timeout: 15_000 }).toBeGreaterThan(0);
    // And Carol sees and hears Bob.
    await expectMediaFlowing(carol);
  });
});

test('someone may also just watch and listen, sending nothing', async ({ open }) => {
  const room = freshRoom();
  const bob = await open(`/call/${room}`);
  await start(bob);
  await withCameraDenied(async (carol) => {
    await carol.goto(`http://127.0.0.1:${PORT}/call/${room}`);
    await start(carol);
    await carol.getByRole('button', { name: 'Watch and listen only' }).click();
    await expectMediaFlowing(carol);
    await expect(status(bob)).toHaveText('Connected.');
    await expect(bob.getByText("The other person's camera is off")).toBeVisible();
    await expect(bob.getByText('The other person is muted')).toBeVisible();
    expect(await growth(bob, 'video', 'bytesReceived')).toBe(0);
  });
});

test('the statistics panel shows live numbers', async ({ open }) => {
  const { alice } = await connectedPair(open);
  await openPanel(alice, 'More');
  const received = alice.locator('.stats dt:has-text("Received") + dd');
  await expect(received).toHaveText(/^\d+ kbit\/s$/);
  await expect(alice.locator('.stats dt:has-text("Path") + dd')).toHaveText('direct');
  await expect(alice.locator('.stats dt:has-text("Video") + dd')).toHaveText(/^\d+×\d+$/);
  await expect(alice.locator('.stats dt:has-text("Round trip") + dd')).toHaveText(/^\d+ ms$/);
  const first = await received.textContent();
  await expect.poll(() => received.textContent(), { timeout: 10_000 }).not.toBe(first);
});

test('on a phone-sized screen every control is reachable without scrolling sideways', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  await alice.setViewportSize({ width: 375, height: 740 });
  for (const name of ['Start', 'Mute', 'Camera off']) {
    const box = await alice.getByRole('button', { name, exact: true }).boundingBox();
    expect(box, name).not.toBeNull();
    expect(box!.x + box!.width, name).toBeLessThanOrEqual(375);
  }
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  expect(await alice.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
  await openPanel(alice, 'Chat');
  for (const name of ['Mute', 'Camera off', 'Share screen', 'Chat', 'People', 'More', 'Hang up', 'Send']) {
    const box = await alice.getByRole('button', { name, exact: true }).boundingBox();
    expect(box, name).not.toBeNull();
    expect(box!.x + box!.width, name).toBeLessThanOrEqual(375);
  }
});
