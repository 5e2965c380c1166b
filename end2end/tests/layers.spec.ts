import { type Page } from '@playwright/test';
import { chromiumPerson, growth, receivedWidths, sentLayers } from './people';
import { test, expect, expectEveryoneVideoPlaying, freshRoom, hdCamera, smallCamera, start, startServer, waitUntilServing, type Server } from './helpers';

// Simulcast through the server (issue 34): each page sends its camera in three sizes, and the
// server sends each receiver the one its tile needs, nothing for a tile not shown, and has the
// sender pause what nobody is sent (docs/protocol.md, "Simulcast").

const PORT = 3114;

const widths = (page: Page) => receivedWidths(chromiumPerson(page));
const layers = (page: Page) => sentLayers(chromiumPerson(page));

/** Bytes of each layer `page` sends over `ms`. */
async function layerGrowth(page: Page, ms: number) {
  const before = await layers(page);
  await page.waitForTimeout(ms);
  const after = await layers(page);
  return Object.fromEntries(Object.entries(after).map(([rid, { bytes }]) => [rid, bytes - (before[rid]?.bytes ?? 0)]));
}

test.describe('simulcast layers', () => {
  let server: Server;
  test.beforeAll(async () => {
    server = startServer(PORT, '--media', 'sfu');
    await waitUntilServing(server);
  });
  test.afterAll(() => { server.kill('SIGKILL'); });

  /** Ann with a 1280×720 camera, and Bob watching her in a window of `width` × `height`. */
  async function annAndBob(open: Parameters<Parameters<typeof test>[1]>[0]['open'], width: number, height: number) {
    const url = `http://127.0.0.1:${PORT}/call/${freshRoom()}`;
    const ann = await open(url, hdCamera);
    const bob = await open(url, smallCamera, { viewport: { width, height } });
    await start(ann);
    await start(bob);
    await expectEveryoneVideoPlaying(bob, 1);
    return { ann, bob };
  }

  test('a large tile gets the full layer, a small one the quarter, and a resize moves between them within 2 s', async ({ open }) => {
    const { ann, bob } = await annAndBob(open, 1600, 1000);
    // Ann's camera goes up in three sizes.
    await expect.poll(async () => Object.entries(await layers(ann)).map(([rid, { width }]) => `${rid} ${width}`).sort())
      .toEqual(['f 1280', 'h 640', 'q 320']);
    await expect.poll(() => widths(bob), { timeout: 10_000 }).toEqual([1280]);
    await bob.setViewportSize({ width: 480, height: 270 });
    await expect.poll(() => widths(bob), { timeout: 2_000, message: 'the quarter layer within 2 s' }).toEqual([320]);
    await bob.setViewportSize({ width: 1600, height: 1000 });
    await expect.poll(() => widths(bob), { timeout: 2_000, message: 'the full layer within 2 s' }).toEqual([1280]);
  });

  test('a layer nobody is sent is paused at the sender, and resumed when someone needs it', async ({ open }) => {
    const { ann, bob } = await annAndBob(open, 480, 270);
    await expect.poll(() => widths(bob), { timeout: 10_000 }).toEqual([320]);
    // Only the quarter layer is sent on: the half and full ones stop at Ann's encoder.
    await expect.poll(async () => {
      const sent = await layerGrowth(ann, 1_000);
      return [sent.q > 0, sent.h, sent.f];
    }, { timeout: 10_000 }).toEqual([true, 0, 0]);
    await bob.setViewportSize({ width: 1600, height: 1000 });
    await expect.poll(() => widths(bob), { timeout: 3_000 }).toEqual([1280]);
    expect((await layerGrowth(ann, 1_000)).f).toBeGreaterThan(0);
  });

  test('a page that is hidden receives no video, and gets it back within 1 s of being shown', async ({ open }) => {
    const { bob } = await annAndBob(open, 1000, 700);
    const person = chromiumPerson(bob);
    // Headless Chromium keeps every page visible: another page brought to the front, or the
    // window minimised over CDP, left `visibilityState` at 'visible' (tried). So the page is
    // told what a browser says of a background tab, where the page reads it.
    const hide = (hidden: boolean) => bob.evaluate((hidden) => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => hidden ? 'hidden' : 'visible' });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await hide(true);
    await bob.waitForTimeout(1_000);
    expect(await growth(person, 'video', 'bytesReceived', 2_000)).toBe(0);
    expect(await growth(person, 'audio', 'bytesReceived', 1_000)).toBeGreaterThan(0);
    await hide(false);
    const shown = Date.now();
    await expect.poll(() => growth(person, 'video', 'framesDecoded', 200), { timeout: 1_000 }).toBeGreaterThan(0);
    console.log(`video again ${Date.now() - shown} ms after the page was shown`);
  });
});
