// The call page is laid out like a call app at every window size: a stage that fills the
// window without scrolling, one control bar whose every control can be reached, this side's
// view clear of everyone else's, an even share for each of four people; and the panels.
import { type Page } from '@playwright/test';
import {
  test, expect, connectedPair, expectEveryoneVideoPlaying, expectMediaFlowing, freshRoom, hangUp, openPanel, smallCamera, start,
  status,
} from './helpers';

const sizes = [
  { width: 1280, height: 800 }, { width: 1440, height: 900 }, { width: 390, height: 844 }, { width: 844, height: 390 },
];
const barControls = ['Mute', 'Camera off', 'Share screen', 'Chat', 'People', 'More', 'Hang up'];

type Box = { x: number; y: number; width: number; height: number };
const overlap = (a: Box, b: Box) =>
  Math.max(0, Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x)) *
  Math.max(0, Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y));

/** What the layout checks measure on `page`, in CSS pixels. */
const measure = (page: Page) => page.evaluate(() => {
  const box = (element: Element) => {
    const { x, y, width, height } = element.getBoundingClientRect();
    return { x, y, width, height };
  };
  const shown = (element: Element) => box(element).width > 0 && getComputedStyle(element).visibility !== 'hidden';
  const stage = document.querySelector('.stage')!;
  const own = stage.querySelector('.tile.own')!;
  const others = [...stage.querySelectorAll('.tile:not(.own)')];
  return {
    scroll: { height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth },
    window: { height: innerHeight, width: innerWidth },
    stage: box(stage),
    own: box(own),
    tiles: others.map(box),
    // What this side's view must never cover: each name and state shown on another tile.
    marks: others.flatMap((tile) => [...tile.querySelectorAll('.name, .remote-state li, .tile-actions button')].filter(shown).map(box)),
  };
});

async function expectCallLayout(page: Page, others: number, size: { width: number; height: number }) {
  const at = `${size.width}×${size.height}, ${others + 1} people`;
  const m = await measure(page);
  expect(m.scroll.height, `${at}: no vertical scrolling`).toBeLessThanOrEqual(m.window.height);
  expect(m.scroll.width, `${at}: no horizontal scrolling`).toBeLessThanOrEqual(m.window.width);
  for (const name of barControls) {
    const control = page.getByRole('button', { name, exact: true });
    await expect(control, `${at}: ${name}`).toBeInViewport({ ratio: 1 });
    // Playwright's own check that a click would land on it: visible, enabled, not covered.
    await control.click({ trial: true, timeout: 5_000 });
  }
  expect(m.tiles.length, at).toBe(others);
  for (const mark of m.marks) expect(overlap(m.own, mark), `${at}: your view covers a name or state`).toBe(0);
  if (others > 1) {
    for (const tile of m.tiles) expect(overlap(m.own, tile), `${at}: your view covers a tile`).toBeLessThan(1);
    // Four people: everyone gets a quarter of the stage (a pixel of rounding aside).
    if (others === 3) {
      const stageArea = m.stage.width * m.stage.height;
      for (const tile of [...m.tiles, m.own]) {
        expect(tile.width * tile.height, `${at}: a tile's share of the stage`).toBeGreaterThanOrEqual(0.25 * stageArea - 2 * (m.stage.width + m.stage.height));
      }
    }
  }
}

test('a call of two fills the window at every size, with every control reachable and the self view clear', async ({ open }) => {
  const { alice } = await connectedPair(open);
  for (const size of sizes) {
    await alice.setViewportSize(size);
    await expectCallLayout(alice, 1, size);
  }
  // Start is not on screen during a call.
  await expect(alice.getByRole('button', { name: 'Start' })).toHaveCount(0);
});

test('a call of four gives everyone an even share at every size', async ({ open }) => {
  test.setTimeout(150_000);
  const url = `/call/${freshRoom()}`;
  const people: Page[] = [];
  for (let i = 0; i < 4; i++) {
    const page = await open(url, smallCamera);
    await start(page);
    people.push(page);
  }
  for (const page of people) await expectEveryoneVideoPlaying(page, 3);
  for (const size of sizes) {
    await people[0].setViewportSize(size);
    await expectCallLayout(people[0], 3, size);
  }
});

test('a tile goes full screen by its button or a double-click, and back; picture-in-picture floats the video', async ({ open }) => {
  const { alice } = await connectedPair(open);
  const fullScreen = () => alice.evaluate(() => document.fullscreenElement?.className ?? null);
  await alice.getByRole('button', { name: 'Show the other person full screen' }).click();
  await expect.poll(fullScreen).toMatch(/\btile\b/);
  await alice.getByRole('button', { name: 'Show the other person full screen' }).click();
  await expect.poll(fullScreen).toBeNull();
  await alice.locator('.tile:not(.own)').dblclick();
  await expect.poll(fullScreen).toMatch(/\btile\b/);
  await alice.locator('.tile:not(.own)').dblclick();
  await expect.poll(fullScreen).toBeNull();
  // Chromium has picture-in-picture, headless too: the button floats the other person's video.
  expect(await alice.evaluate(() => document.pictureInPictureEnabled)).toBe(true);
  await alice.getByRole('button', { name: 'Show the other person in picture-in-picture' }).click();
  await expect.poll(() => alice.evaluate(() => document.pictureInPictureElement?.getAttribute('aria-label') ?? null))
    .toBe("The other person's video");
});

test('a shared screen goes large, with the people as a strip, at every size', async ({ open }) => {
  test.setTimeout(120_000);
  const url = `/call/${freshRoom()}`;
  const [ada, bob, cy] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  for (const page of [ada, bob, cy]) await start(page);
  await expectEveryoneVideoPlaying(bob, 2);
  await ada.getByRole('button', { name: 'Share screen' }).click();
  const stage = bob.locator('.stage');
  await expect(stage).toHaveClass(/presenting/);
  for (const size of sizes) {
    await bob.setViewportSize(size);
    await expectCallLayout(bob, 2, size);
    const m = await measure(bob);
    const featured = await bob.locator('.tile.featured').boundingBox();
    const area = (box: Box) => box.width * box.height;
    const at = `${size.width}×${size.height}`;
    // The screen takes most of the stage; everyone else is a strip below it.
    expect(area(featured!), `${at}: the shared screen's share of the stage`).toBeGreaterThanOrEqual(0.6 * area(m.stage));
    const strip = [...m.tiles, m.own].filter((tile) => overlap(tile, featured!) < 1);
    expect(strip, `${at}: everyone else in the strip`).toHaveLength(2);
    for (const tile of strip) {
      expect(tile.y, `${at}: a strip tile sits below the screen`).toBeGreaterThanOrEqual(featured!.y + featured!.height - 1);
      expect(tile.width, `${at}: a strip tile is seen`).toBeGreaterThan(50);
    }
  }
  // Stopping the share brings the even grid back.
  await ada.getByRole('button', { name: 'Share screen' }).click();
  await expect(stage).not.toHaveClass(/presenting/);
  await expect(bob.locator('.tile.featured')).toHaveCount(0);
});

test('the join screen shows the preview playing, who is in the call, and Start; in a call, Start is gone', async ({ open }) => {
  const room = freshRoom();
  const ada = await open(`/call/${room}`);
  const alice = await open(`/call/${room}`);
  await expect(alice.getByText('No one else is here yet.')).toBeVisible();
  await chooseName(ada, 'Ada');
  await start(ada);
  // Told by the server before Alice joins: Ada's name, then that she left.
  await expect(alice.getByText('Ada is in this call.')).toBeVisible();
  await hangUp(ada);
  await expect(alice.getByText('No one else is here yet.')).toBeVisible();

  const preview = alice.getByLabel('Your video');
  await expect(alice.getByRole('heading', { name: 'Ready to join?' })).toBeVisible();
  await expect(alice.getByRole('button', { name: 'Start' })).toBeEnabled();
  await expect.poll(() => preview.evaluate((v: HTMLVideoElement) => v.videoWidth)).toBeGreaterThan(0);
  const time = await preview.evaluate((v: HTMLVideoElement) => v.currentTime);
  await expect.poll(() => preview.evaluate((v: HTMLVideoElement) => v.currentTime)).toBeGreaterThan(time + 0.5);
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  await expect(alice.getByRole('button', { name: 'Start' })).toHaveCount(0);
  await expect(alice.getByRole('heading', { name: 'Ready to join?' })).toHaveCount(0);
});

/** The join screen's microphone meter read every 50 ms for `ms`: the loudest and quietest. */
const meterRange = (page: Page, ms: number) => page.getByRole('meter', { name: 'Microphone level' }).evaluate(
  (meter: HTMLMeterElement, ms) => new Promise<{ loudest: number; quietest: number }>((resolve) => {
    const seen: number[] = [];
    const timer = setInterval(() => seen.push(meter.value), 50);
    setTimeout(() => {
      clearInterval(timer);
      resolve({ loudest: Math.max(...seen), quietest: Math.min(...seen) });
    }, ms);
  }), ms);

/** The label of the microphone track `page` sends on its newest connection. */
const sentMicrophone = (page: Page) => page.evaluate(() => {
  const newest: RTCPeerConnection = (window as any).__newestPeerConnection();
  return newest.getSenders().find((s) => s.track?.kind === 'audio')?.track?.label;
});

test('the join screen lists the cameras and microphones, its meter follows the microphone, and the one chosen is the one the call sends', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const camera = alice.getByRole('combobox', { name: 'Camera' });
  const microphone = alice.getByRole('combobox', { name: 'Microphone' });
  await expect(camera.locator('option')).not.toHaveCount(0);
  await expect(microphone.locator('option', { hasText: 'Fake Audio Input 1' })).toHaveCount(1);

  // Chromium's fake microphone beeps twice a second: the meter jumps and falls back.
  await expect.poll(async () => {
    const { loudest, quietest } = await meterRange(alice, 1_500);
    return loudest >= 30 && quietest < loudest;
  }, { timeout: 10_000 }).toBe(true);
  // Muted, it stays empty: nothing would be sent.
  await alice.getByRole('button', { name: 'Mute' }).click();
  await expect.poll(async () => (await meterRange(alice, 1_500)).loudest).toBe(0);
  await alice.getByRole('button', { name: 'Mute' }).click();

  // Another microphone: the preview and the meter take it at once, and the call sends it.
  await microphone.selectOption({ label: 'Fake Audio Input 1' });
  const previewMicrophone = () => alice.getByLabel('Your video').evaluate(
    (v: HTMLVideoElement) => (v.srcObject as MediaStream).getAudioTracks().map((t) => t.label).join());
  await expect.poll(previewMicrophone).toBe('Fake Audio Input 1');
  await expect.poll(async () => (await meterRange(alice, 1_500)).loudest, { timeout: 10_000 }).toBeGreaterThanOrEqual(30);
  const bob = await open(`/call/${room}`);
  await start(bob);
  await start(alice);
  await expect(status(alice)).toHaveText('Connected.');
  await expect(alice.getByRole('meter', { name: 'Microphone level' })).toBeHidden();
  expect(await sentMicrophone(alice)).toBe('Fake Audio Input 1');
  await openPanel(alice, 'More');
  await expect(alice.getByRole('combobox', { name: 'Microphone' }).locator('option:checked')).toHaveText('Fake Audio Input 1');
  await expectMediaFlowing(bob);
});

test('the chat and people panels open and close from the keyboard, and the chat counts what was not read', async ({ open }) => {
  const { alice, bob } = await connectedPair(open);
  const chatButton = alice.getByRole('button', { name: /^Chat/ });
  await expect(chatButton).toHaveAccessibleName('Chat');

  // Bob writes while Alice's chat is shut: her Chat button counts it.
  await openPanel(bob, 'Chat');
  for (const text of ['one', 'two']) {
    await bob.getByLabel('Message').fill(text);
    await bob.getByLabel('Message').press('Enter');
  }
  await expect(chatButton).toHaveAccessibleName('Chat 2 unread');

  // From the keyboard: the focus goes into the panel and back to the button.
  await chatButton.focus();
  await alice.keyboard.press('Enter');
  await expect(alice.getByRole('region', { name: 'Chat' }).getByRole('listitem')).toHaveCount(2);
  await expect(alice.getByLabel('Message')).toBeFocused();
  await expect(chatButton).toHaveAccessibleName('Chat');
  await expect(chatButton).toHaveAttribute('aria-expanded', 'true');
  await alice.keyboard.type('hello back');
  await alice.keyboard.press('Enter');
  await expect(bob.getByRole('region', { name: 'Chat' }).getByRole('listitem').last()).toContainText('hello back');
  await alice.keyboard.press('Escape');
  await expect(alice.getByRole('region', { name: 'Chat' })).toBeHidden();
  await expect(chatButton).toBeFocused();
  await expect(chatButton).toHaveAttribute('aria-expanded', 'false');

  // The people panel lists everyone, with their state in words.
  const peopleButton = alice.getByRole('button', { name: 'People' });
  await peopleButton.focus();
  await alice.keyboard.press('Enter');
  await expect(alice.getByRole('button', { name: 'Close', exact: true })).toBeFocused();
  await bob.getByRole('button', { name: 'Mute' }).click();
  const list = alice.getByRole('complementary', { name: 'People in the call' }).getByRole('listitem');
  await expect(list).toHaveCount(2);
  await expect(list.first()).toContainText('You');
  await expect(list.last()).toContainText('The other person');
  await expect(list.last()).toContainText('muted');
  await alice.keyboard.press('Enter');
  await expect(peopleButton).toBeFocused();
  await expect(alice.getByRole('complementary', { name: 'People in the call' })).toBeHidden();
});

test('the More panel holds the devices, the statistics and the shortcuts', async ({ open }) => {
  const { alice } = await connectedPair(open);
  await openPanel(alice, 'More');
  await expect(alice.getByRole('combobox', { name: 'Camera' })).toBeVisible();
  await expect(alice.locator('.stats dt:has-text("Path") + dd')).toHaveText('direct');
  await expect(alice.getByRole('heading', { name: 'Keyboard shortcuts' })).toBeVisible();
  await expectMediaFlowing(alice);
});

/** Types `name` as this person's name and leaves the field. */
async function chooseName(page: Page, name: string) {
  await page.getByLabel('Your name').fill(name);
  await page.getByLabel('Your name').press('Tab');
}

test('screenshots for the README: the join screen and a call of three, on a desktop and a phone', async ({ open }) => {
  test.setTimeout(120_000);
  const url = `/call/${freshRoom()}`;
  const desktop = { width: 1280, height: 800 };
  const phone = { width: 390, height: 844 };
  const [ada, bob, cy] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await chooseName(bob, 'Bob');
  await chooseName(cy, 'Cy');
  await start(bob);
  await start(cy);
  await chooseName(ada, 'Ada');
  await expect(ada.getByText('Bob and Cy are in this call.')).toBeVisible();
  const preview = ada.getByLabel('Your video');
  await expect.poll(() => preview.evaluate((v: HTMLVideoElement) => v.videoWidth)).toBeGreaterThan(0);
  for (const [size, name] of [[desktop, 'desktop'], [phone, 'phone']] as const) {
    await ada.setViewportSize(size);
    await ada.screenshot({ path: `../docs/screenshots/join-${name}.png` });
  }
  await start(ada);
  await expectEveryoneVideoPlaying(ada, 2);
  for (const [size, name] of [[desktop, 'desktop'], [phone, 'phone']] as const) {
    await ada.setViewportSize(size);
    await ada.screenshot({ path: `../docs/screenshots/call-${name}.png` });
  }
});
