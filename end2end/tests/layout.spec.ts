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
