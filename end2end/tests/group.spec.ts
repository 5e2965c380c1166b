import { type Page } from '@playwright/test';
import { test, expect, exited, expectEveryoneVideoPlaying, frameGaps, freshRoom, hangUp, openConnections, openPanel, recordFrameGaps, smallCamera, start, startServer, status, tiles, tinyCamera, waitUntilServing } from './helpers';
import * as people from './people';
import { chromiumPerson } from './people';

// Calls of three and four (rooms hold four by default).

const videoCaps = (page: Page) => people.videoCaps(chromiumPerson(page));

/** Types `name` as this person's name (the field takes it once the page is hydrated), and
 * leaves the field. */
async function chooseName(page: Page, name: string) {
  const field = page.getByLabel('Your name');
  await field.fill(name);
  await field.press('Tab');
}

const speaking = (page: Page) => people.speakingVideos(chromiumPerson(page));

/** Where each remote tile sits on the stage, as fractions of its width and height. */
const layout = (page: Page) => page.evaluate(() => {
  const area = document.querySelector('.stage')!.getBoundingClientRect();
  const tenths = (fraction: number) => Math.round(fraction * 10) / 10;
  return [...document.querySelectorAll('.stage .tile:not(.own)')].map((tile) => {
    const box = tile.getBoundingClientRect();
    return {
      x: tenths((box.left - area.left) / area.width), y: tenths((box.top - area.top) / area.height),
      w: tenths(box.width / area.width), h: tenths(box.height / area.height),
    };
  });
});

/** The chat's last line on `page`. */
const lastChatLine = (page: Page) => page.getByRole('region', { name: 'Chat' }).getByRole('listitem').last();

test('three people in a room each see and hear the other two, and two go on when one leaves', async ({ open }) => {
  const room = freshRoom();
  const url = `/call/${room}`;
  const [alice, bob, carol] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting for someone to join/);
  await start(bob);
  await start(carol);
  for (const page of [alice, bob, carol]) {
    // No one chose a name: in a group each is a guest, with their number in this page's call.
    await expect(status(page)).toHaveText('Connected with Guest 1 and Guest 2.');
    await expectEveryoneVideoPlaying(page, 2);
    const labels = (await tiles(page)).map((t) => t.label);
    expect(labels).toEqual(["Guest 1's video", "Guest 2's video"]);
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
  await hangUp(bob);
  await expect(status(alice)).toHaveText('Everyone else left. Waiting for someone to join…');
});

test('three people pressing Start at the same moment all end up in one call', async ({ open }) => {
  const url = `/call/${freshRoom()}`;
  const people = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await Promise.all(people.map(start));
  for (const page of people) await expectEveryoneVideoPlaying(page, 2);
});

test.describe('the move to the server', () => {
  // Fails about one run in ten on this 2-core machine: a tile waiting just over a second while
  // five browsers share the CPU (docs/performance.md, the move). Up to twice more, reported as
  // flaky; three failures in a row still fail.
  test.describe.configure({ retries: 2 });

  test('four people talk browser to browser; a fifth moves the room to the server, and no one\'s video stops for a second', async ({ open }) => {
    test.setTimeout(180_000);
    const room = freshRoom();
    const url = `/call/${room}`;
    const people: Page[] = [];
    for (let i = 0; i < 4; i++) {
      // The first is on a phone. The cameras are tiny: five browsers on two cores, each encoding
      // for up to four connections at the move.
      const page = await open(url, tinyCamera(i), i === 0 ? { viewport: { width: 390, height: 844 } } : undefined);
      await start(page);
      people.push(page);
    }
    const [phone, desktop] = people;
    for (const page of people) await expectEveryoneVideoPlaying(page, 3);
    await expect.poll(() => videoCaps(phone)).toEqual([833_333, 833_333, 833_333]);
    for (const page of people) await expect(status(page)).toHaveText('Connected with Guest 1, Guest 2 and Guest 3.');
    await expectEveryoneVideoPlaying(phone, 3);

    // Three others fill three cells of a square, this side the fourth, on a phone as on a desktop.
    const square = [{ x: 0, y: 0, w: 0.5, h: 0.5 }, { x: 0.5, y: 0, w: 0.5, h: 0.5 }, { x: 0, y: 0.5, w: 0.5, h: 0.5 }];
    for (const page of [phone, desktop]) expect(await layout(page)).toEqual(square);

    // A fifth person: everyone moves to the server (make-before-break), each keeping every
    // tile's video going.
    const eve = await open(url, tinyCamera(4));
    await expect(eve.getByRole('button', { name: 'Start' })).toBeEnabled();
    for (const page of people) await recordFrameGaps(page);
    await start(eve);
    for (const page of [...people, eve]) {
      await expect(status(page)).toHaveText(/^Connected with .* Media goes through the server\.$/, { timeout: 30_000 });
      await expect.poll(() => openConnections(page), { message: 'one connection, to the server', timeout: 30_000 }).toBe(1);
      await expectEveryoneVideoPlaying(page, 4);
    }
    for (const page of people) {
      const gaps = await frameGaps(page);
      // What docs/performance.md quotes of the move.
      console.log(`longest wait for a frame during the move, ms: ${JSON.stringify(gaps)}`);
      expect(Object.keys(gaps).length, JSON.stringify(gaps)).toBe(3);
      for (const [tile, gap] of Object.entries(gaps)) expect(gap, `${tile}: no frame for ${gap} ms`).toBeLessThan(1_000);
    }
    await hangUp(eve);
    for (const page of people) await expectEveryoneVideoPlaying(page, 3, 10_000);
    // Two others: side by side above this side on a desktop, the three stacked on a phone.
    await hangUp(people[3]);
    await expect.poll(() => layout(desktop)).toEqual([{ x: 0, y: 0, w: 0.5, h: 0.5 }, { x: 0.5, y: 0, w: 0.5, h: 0.5 }]);
    await expect.poll(() => layout(phone)).toEqual([{ x: 0, y: 0, w: 1, h: 0.3 }, { x: 0, y: 0.3, w: 1, h: 0.3 }]);
    // One other fills the whole view.
    await hangUp(people[2]);
    for (const page of [phone, desktop]) await expect.poll(() => layout(page)).toEqual([{ x: 0, y: 0, w: 1, h: 1 }]);
  });
});

test('a three-person call survives its signaling server being killed and restarted', async ({ open }) => {
  test.setTimeout(120_000);
  const port = 3110;
  let own = startServer(port);
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

    own = startServer(port);
    await waitUntilServing(own);
    for (const page of people) await expect(status(page)).toHaveText(/^Connected with /, { timeout: 20_000 });
    for (const page of people) await expectEveryoneVideoPlaying(page, 2);
    // And the room works again: one hangs up, the other two are told and go on.
    await hangUp(people[2]);
    for (const page of people.slice(0, 2)) await expectEveryoneVideoPlaying(page, 1, 5_000);
  } finally {
    own.kill('SIGKILL');
  }
});

test('people go by the names they chose in tiles, the status line and chat, and whoever speaks is highlighted', async ({ open }) => {
  test.setTimeout(90_000);
  const url = `/call/${freshRoom()}`;
  const [alice, bob, carol] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await chooseName(alice, 'Alice');
  await chooseName(bob, 'Bob');
  // Markup in a name is just characters.
  await chooseName(carol, '<i>Carol</i>');
  // One after the other, so that each page lists the others in the order they came.
  await start(alice);
  await expect(status(alice)).toHaveText(/Waiting/);
  await start(bob);
  await expect(status(bob)).toHaveText('Connected with Alice.');
  await start(carol);
  await expect(status(alice)).toHaveText('Connected with Bob and <i>Carol</i>.');
  await expect(status(bob)).toHaveText('Connected with Alice and <i>Carol</i>.');
  await expect(status(carol)).toHaveText('Connected with Alice and Bob.');
  await expectEveryoneVideoPlaying(alice, 2);
  expect((await tiles(alice)).map((t) => t.label)).toEqual(["Bob's video", "<i>Carol</i>'s video"]);
  await expect(alice.locator('.tile:not(.own) .name')).toHaveText(['Bob', '<i>Carol</i>']);
  await expect(alice.locator('.stage i')).toHaveCount(0);

  // Chromium's fake microphone beeps while its fake camera runs: each person is heard.
  const both = ["Bob's video", "<i>Carol</i>'s video"];
  await expect.poll(() => speaking(alice), { message: 'both highlighted' }).toEqual(both);
  // Bob sees himself heard too, on his own view.
  await expect(bob.locator('.tile.own')).toHaveClass(/speaking/);
  await bob.getByRole('button', { name: 'Mute' }).click();
  await expect(alice.getByText('Bob is muted')).toBeVisible();
  await expect.poll(() => speaking(alice), { message: 'muted Bob is silent' }).toEqual(["<i>Carol</i>'s video"]);
  await expect(bob.locator('.tile.own')).not.toHaveClass(/speaking/);
  await bob.getByRole('button', { name: 'Mute' }).click();
  await expect.poll(() => speaking(alice), { message: 'Bob heard again' }).toEqual(both);

  // Chat reaches everyone, under the sender's name.
  for (const page of [alice, bob, carol]) await openPanel(page, 'Chat');
  await alice.getByLabel('Message').fill('hello, both of you');
  await alice.getByLabel('Message').press('Enter');
  for (const page of [bob, carol]) {
    await expect(lastChatLine(page).locator('.who')).toHaveText('Alice');
    await expect(lastChatLine(page).locator('.text')).toHaveText('hello, both of you');
  }
  await carol.getByLabel('Message').fill('hi!');
  await carol.getByLabel('Message').press('Enter');
  for (const page of [alice, bob]) await expect(lastChatLine(page)).toContainText('<i>Carol</i>');

  // A new name reaches the others mid-call.
  // In a call, the name is in the More panel.
  await openPanel(bob, 'More');
  await chooseName(bob, 'Robert');
  await expect(status(alice)).toHaveText('Connected with Robert and <i>Carol</i>.');
  await expect(carol.getByLabel("Robert's video")).toBeVisible();
});

test('one person reloading leaves the call for a moment and comes back under the name they chose', async ({ open }) => {
  test.setTimeout(90_000);
  const url = `/call/${freshRoom()}`;
  const [alice, bob, carol] = [await open(url, smallCamera), await open(url, smallCamera), await open(url, smallCamera)];
  await chooseName(carol, 'Carol');
  for (const page of [alice, bob, carol]) await start(page);
  for (const page of [alice, bob]) await expectEveryoneVideoPlaying(page, 2);

  await carol.reload();
  for (const page of [alice, bob]) {
    // The page said goodbye as it went: her tile goes at once, and the two go on.
    await expectEveryoneVideoPlaying(page, 1, 5_000);
    await expect(status(page)).toHaveText('Connected.');
  }
  // The browser kept her name.
  await expect(carol.getByLabel('Your name')).toHaveValue('Carol');
  await start(carol);
  for (const page of [alice, bob, carol]) await expectEveryoneVideoPlaying(page, 2);
  for (const page of [alice, bob]) {
    await expect(page.getByLabel("Carol's video")).toBeVisible();
    await expect(status(page)).toHaveText(/^Connected with Guest \d and Carol\.$/);
  }
});
