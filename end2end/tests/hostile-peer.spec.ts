import { type Page } from '@playwright/test';
import { test, expect, expectMediaFlowingBothWays, freshRoom, openPanel, start, status } from './helpers';

// The other side of a call is a browser the page does not control: what arrives over the data
// channel is held to the limits a Duo page sends within (docs/protocol.md). Here the other side
// is the real app, whose data channel the test then speaks over directly, as a changed client
// would.

/** Keeps each data channel the page makes in `window.__channels`, for the test to send on. */
const recordDataChannels = (page: Page) => page.addInitScript(() => {
  const channels: RTCDataChannel[] = [];
  (window as any).__channels = channels;
  const create = RTCPeerConnection.prototype.createDataChannel;
  RTCPeerConnection.prototype.createDataChannel = function (this: RTCPeerConnection, ...args: Parameters<typeof create>) {
    const channel = create.apply(this, args);
    channels.push(channel);
    return channel;
  };
});

/** Sends each of `messages` as it is over the page's open data channel. */
const sendRaw = (page: Page, messages: string[]) => page.evaluate((messages) => {
  const channel: RTCDataChannel = (window as any).__channels.findLast((c: RTCDataChannel) => c.readyState === 'open');
  for (const message of messages) channel.send(message);
}, messages);

const chat = (text: string) => JSON.stringify({ message_type: 'CHAT', content: { text, sent_at: Date.now() } });

/** The chat as `page` shows it: each line's author (none for the page's own notes) and text. */
const chatLines = (page: Page) => page.evaluate(() => [...document.querySelectorAll('.chat .messages li')].map((li) => ({
  who: li.querySelector('.who')?.textContent ?? null,
  text: li.querySelector('.text')!.textContent!,
})));

/** How many messages the page's notes (from `index` on) say were not shown. */
const withheld = async (page: Page, index = 0) => (await chatLines(page)).slice(index)
  .map((line) => line.who === null ? line.text.match(/^(\d+) messages? from the other person (?:was|were) not shown/) : null)
  .reduce((sum, match) => sum + (match ? Number(match[1]) : 0), 0);

/** The longest chat line `page` shows. */
const longestLine = async (page: Page) => Math.max(...(await chatLines(page)).map((line) => line.text.length));

/** `MAX_CHAT_CHARS` in src/protocol.rs: the longest line a page sends (its field's `maxlength`). */
const MAX_CHAT_CHARS = 2_000;

/** Alice's page in a call with Mallory's, whose data channel the test speaks over. */
async function callWithMallory(open: (path: string, prepare?: (page: Page) => Promise<unknown>) => Promise<Page>) {
  const room = freshRoom();
  const alice = await open(`/call/${room}`);
  const mallory = await open(`/call/${room}`, recordDataChannels);
  await start(alice);
  await start(mallory);
  await expectMediaFlowingBothWays(alice, mallory);
  await expect.poll(() => mallory.evaluate(() => (window as any).__channels.some((c: RTCDataChannel) => c.readyState === 'open')))
    .toBe(true);
  for (const page of [alice, mallory]) await openPanel(page, 'Chat');
  return { alice, mallory, lines: alice.getByRole('region', { name: 'Chat' }).getByRole('listitem') };
}

test('a name of characters that render as nothing is no name', async ({ open }) => {
  const { alice, mallory, lines } = await callWithMallory(open);
  // Tag characters, variation selectors, the combining grapheme joiner, a Mongolian free
  // variation selector, musical formatting, a Hangul filler, the blank braille pattern, an
  // ideographic space, a lone combining mark: she stays "the other person", never an empty name.
  const invisible = '\u{E0041}\u{E0064}\u{FE0F}\u{034F}\u{180B}\u{1D173}\u{3164}\u{2800}\u{3000}\u{0301}';
  await sendRaw(mallory, [JSON.stringify({ message_type: 'NAME', content: invisible }), chat('hello')]);
  await expect(lines).toHaveCount(1);
  expect(await chatLines(alice)).toEqual([{ who: 'Them', text: 'hello' }]);
  await expect(status(alice)).toHaveText('Connected.');
  await expect(alice.locator('.tile:not(.own) .name')).toBeHidden();
  await expect(alice.getByLabel("The other person's video")).toBeVisible();
});

test('chat from a peer is held to the length and rate a page sends by, and what is dropped is counted', async ({ open }) => {
  const { alice, mallory, lines } = await callWithMallory(open);
  // The longest line a page sends is shown; one character more, or 200,000, is not, and the page
  // says so in words.
  await sendRaw(mallory, [chat('y'.repeat(MAX_CHAT_CHARS)), chat('z'.repeat(MAX_CHAT_CHARS + 1)), chat('x'.repeat(200_000))]);
  await expect.poll(() => withheld(alice), { message: 'the note of the two lines too long' }).toBe(2);
  expect(await chatLines(alice)).toEqual([
    { who: 'Them', text: 'y'.repeat(MAX_CHAT_CHARS) },
    { who: null, text: '2 messages from the other person were not shown: too long, or too many at once.' },
  ]);

  // A flood of 500: ten at once are shown (the line above was a second before: its place may
  // not quite be back), then one a second, and the rest is counted.
  const before = await lines.count();
  await mallory.evaluate(() => {
    const channel: RTCDataChannel = (window as any).__channels.findLast((c: RTCDataChannel) => c.readyState === 'open');
    for (let i = 0; i < 500; i++) channel.send(JSON.stringify({ message_type: 'CHAT', content: { text: `flood ${i}`, sent_at: Date.now() } }));
  });
  const shown = async () => (await chatLines(alice)).slice(before).filter((line) => line.who === 'Them').length;
  await expect.poll(async () => await shown() + await withheld(alice, before), { message: 'every line of the flood shown or counted' })
    .toBe(500);
  expect(await shown()).toBeGreaterThanOrEqual(9);
  // However long the flood takes to arrive on a slow machine, nowhere near all of it.
  expect(await shown()).toBeLessThanOrEqual(20);
  expect(await longestLine(alice)).toBeLessThanOrEqual(MAX_CHAT_CHARS);

  // The call and its chat go on.
  await alice.getByLabel('Message').fill('still there?');
  await alice.getByLabel('Message').press('Enter');
  await expect(mallory.getByRole('region', { name: 'Chat' }).getByRole('listitem').last()).toContainText('still there?');
  await expectMediaFlowingBothWays(alice, mallory);
});
