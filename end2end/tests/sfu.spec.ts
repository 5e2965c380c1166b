import { type Page } from '@playwright/test';
import * as people from './people';
import { chromiumPerson } from './people';
import { test, exited, expect, expectEveryoneVideoPlaying, freshRoom, hangUp, openConnections, openPanel, smallCamera, start, startServer, status, tiles, waitUntilServing, type Server } from './helpers';

// Rooms whose media goes through the server's forwarding unit (`--media sfu`, issue 33): each
// page has one connection, to the server, and gets everyone else's media on it. Firefox pairs no
// loopback candidate, so it meets the forwarding unit in sfu-nat.spec.ts, on a network of its own.

const SFU_PORT = 3112;


/** Bytes of video this page has sent so far. */
const videoBytesSent = (page: Page) => page.evaluate(async () => {
  let sent = 0;
  for (const pc of (window as any).__peerConnections as RTCPeerConnection[]) {
    if (pc.connectionState === 'closed') continue;
    (await pc.getStats()).forEach((report: any) => {
      if (report.type === 'outbound-rtp' && report.kind === 'video') sent += report.bytesSent;
    });
  }
  return sent;
});

/** Where each tile sits on the stage, as fractions of its width and height (two places), and
 * whether the stage scrolls. */
const grid = (page: Page) => page.evaluate(() => {
  const stage = document.querySelector('.stage')!;
  const area = stage.getBoundingClientRect();
  const round = (fraction: number) => Math.round(fraction * 100) / 100;
  const tiles = [...stage.querySelectorAll('.tile')].map((tile) => {
    const box = tile.getBoundingClientRect();
    return { x: round((box.left - area.left) / area.width), y: round((box.top - area.top) / area.height),
      w: round(box.width / area.width), h: round(box.height / area.height) };
  });
  return { tiles, scrolls: stage.scrollHeight > stage.clientHeight };
});

test.describe('through the server', () => {
  let server: Server;
  test.beforeAll(async () => {
    server = startServer(SFU_PORT, '--media', 'sfu', '--max-room-size', '8');
    await waitUntilServing(server);
  });
  test.afterAll(() => { server.kill('SIGKILL'); });

  test('six people: each page has one connection, to the server, and plays the five others; one leaves, one comes late', async ({ open }) => {
    test.setTimeout(180_000);
    const url = `http://127.0.0.1:${SFU_PORT}/call/${freshRoom()}`;
    const people: Page[] = [];
    for (let i = 0; i < 6; i++) {
      // The first is on a phone.
      const page = await open(url, smallCamera, i === 0 ? { viewport: { width: 390, height: 844 } } : undefined);
      await start(page);
      people.push(page);
    }
    for (const page of people) await expectEveryoneVideoPlaying(page, 5, 60_000);
    for (const page of people) expect(await openConnections(page)).toBe(1);
    // Six tiles on a desktop: three by two, each an even share.
    const desktop = await grid(people[1]);
    expect(desktop.tiles.map(({ w, h }) => [w, h])).toEqual(Array(6).fill([0.33, 0.5]));
    // On a phone: one large at the top, the others two abreast under it, scrolling.
    const phone = await grid(people[0]);
    expect(phone.tiles.filter(({ w }) => w === 1)).toEqual([{ x: 0, y: 0, w: 1, h: 0.55 }]);
    expect(phone.tiles.filter(({ w }) => w === 0.5)).toHaveLength(5);
    expect(phone.scrolls).toBe(true);
    await expect(status(people[0])).toHaveText(
      'Connected with Guest 1, Guest 2, Guest 3, Guest 4 and Guest 5. Media goes through the server.');

    // One leaves: the others go on with four.
    await hangUp(people[5]);
    for (const page of people.slice(0, 5)) await expectEveryoneVideoPlaying(page, 4, 10_000);

    // One comes late and sees everyone within five seconds of being connected.
    const late = await open(url, smallCamera);
    await start(late);
    await expect(status(late)).toHaveText(/^Connected with /, { timeout: 10_000 });
    await expectEveryoneVideoPlaying(late, 5, 5_000);
    for (const page of people.slice(0, 5)) await expectEveryoneVideoPlaying(page, 5, 10_000);
    expect(await openConnections(late)).toBe(1);
  });

  test('names, mute states and chat reach everyone through the server', async ({ open }) => {
    test.setTimeout(90_000);
    const url = `http://127.0.0.1:${SFU_PORT}/call/${freshRoom()}`;
    const [ada, bo, cy] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
    for (const [page, name] of [[ada, 'Ada'], [bo, 'Bo'], [cy, 'Cy']] as const) {
      await page.getByLabel('Your name').fill(name);
      await page.getByLabel('Your name').press('Tab');
      await start(page);
    }
    for (const page of [ada, bo, cy]) await expectEveryoneVideoPlaying(page, 2);
    await expect(status(ada)).toHaveText('Connected with Bo and Cy. Media goes through the server.');
    expect((await tiles(bo)).map((t) => t.label).sort()).toEqual(["Ada's video", "Cy's video"]);

    // Who speaks (the fake microphones beep): from the level each packet's RFC 6464 header
    // extension carries, which the server passes on; each audio m-line has one.
    await expect.poll(async () => (await people.speakingVideos(chromiumPerson(ada))).sort(), { message: 'Ada sees both speak' })
      .toEqual(["Bo's video", "Cy's video"]);
    expect(await ada.evaluate(() => (window as any).__newestPeerConnection().getReceivers()
      .filter((r: RTCRtpReceiver) => r.track.kind === 'audio' && r.getSynchronizationSources().length > 0)
      .map((r: RTCRtpReceiver) => typeof r.getSynchronizationSources()[0].audioLevel))).toEqual(['number', 'number']);

    await expect.poll(() => people.speakingVideos(chromiumPerson(bo)), { message: 'Bo sees Ada speak' }).toContain("Ada's video");

    await ada.getByRole('button', { name: 'Mute' }).click();
    for (const page of [bo, cy]) await expect(page.getByText('Ada muted')).toBeVisible();
    // Muted, Ada sends silence: once the ring's hold (1 s) is over, her tile never shows her
    // speaking, over 3 s.
    await bo.waitForTimeout(1_500);
    const seen = new Set<string>();
    for (let i = 0; i < 15; i++) {
      for (const tile of await people.speakingVideos(chromiumPerson(bo))) seen.add(tile as string);
      await bo.waitForTimeout(200);
    }
    expect(seen.has("Ada's video")).toBe(false);

    await openPanel(bo, 'Chat');
    await bo.getByLabel('Message').fill('hello through the server');
    await bo.getByLabel('Message').press('Enter');
    for (const page of [ada, cy]) {
      await openPanel(page, 'Chat');
      const line = page.getByRole('region', { name: 'Chat' }).getByRole('listitem');
      await expect(line).toHaveCount(1);
      await expect(line).toContainText('Bo');
      await expect(line).toContainText('hello through the server');
    }
  });

  test('the server killed and restarted mid-call: the pages say the media stopped, reconnect, and it plays again', async ({ open }) => {
    test.setTimeout(120_000);
    const port = 3113;
    let own = startServer(port, '--media', 'sfu');
    try {
      await waitUntilServing(own);
      const url = `http://127.0.0.1:${port}/call/${freshRoom()}`;
      const people = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
      for (const page of people) await start(page);
      for (const page of people) await expectEveryoneVideoPlaying(page, 2);

      own.kill('SIGKILL');
      await exited(own);
      for (const page of people) await expect(status(page)).toHaveText(/^Lost the connection to the server; reconnecting… \(the call's media goes through it/);

      own = startServer(port, '--media', 'sfu');
      await waitUntilServing(own);
      for (const page of people) await expect(status(page)).toHaveText(/^Connected with .* Media goes through the server\.$/, { timeout: 20_000 });
      for (const page of people) await expectEveryoneVideoPlaying(page, 2, 15_000);
      for (const page of people) expect(await openConnections(page)).toBe(1);
    } finally {
      own.kill('SIGKILL');
    }
  });

  test('a page uploads its video once, however many others receive it', async ({ open }) => {
    test.setTimeout(120_000);
    const url = `http://127.0.0.1:${SFU_PORT}/call/${freshRoom()}`;
    const pair = [await open(url, smallCamera), await open(url, smallCamera)];
    for (const page of pair) await start(page);
    for (const page of pair) await expectEveryoneVideoPlaying(page, 1);
    const sentInTwo = async () => {
      const before = await videoBytesSent(pair[0]);
      await pair[0].waitForTimeout(10_000);
      return (await videoBytesSent(pair[0])) - before;
    };
    const two = await sentInTwo();
    const more: Page[] = [];
    for (let i = 0; i < 4; i++) {
      const page = await open(url, smallCamera);
      await start(page);
      more.push(page);
    }
    for (const page of [...pair, ...more]) await expectEveryoneVideoPlaying(page, 5, 60_000);
    const six = await sentInTwo();
    expect(six, `${six} bytes in a room of six against ${two} in a call of two`).toBeLessThanOrEqual(1.6 * two);
    expect(six).toBeGreaterThan(0.3 * two);
  });
});
