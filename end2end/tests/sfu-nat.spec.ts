// Rooms on the server's forwarding unit (`--media sfu`) from home networks behind real NATs
// (network namespaces, ./netns.ts), with no STUN and no TURN server: the forwarding unit has a
// public address, so every browser reaches it from behind any NAT, symmetric ones included,
// where two browsers could not reach each other without a relay.
import { type Page } from '@playwright/test';
import {
  test, expect, freshRoom, recordPeerConnections, SERVER_BINARY, SERVER_OPTIONS, waitUntilServing, watchServer,
} from './helpers';
import { INTERNET_ADDRESS, NatNetwork } from './netns';
import {
  chromiumPerson, expectStatus, FIREFOX_PREFS, firefoxPerson, openConnections, selectedPair, sentLayers, speakingVideos,
  type Person,
} from './people';

const PORT = 3000;
const origin = `https://${INTERNET_ADDRESS}:${PORT}`;

test.beforeAll(() => {
  expect(process.getuid?.(), 'sfu-nat.spec.ts builds network namespaces: run it as root').toBe(0);
});

let network: NatNetwork;

test.beforeAll(async () => {
  network = NatNetwork.create('sfu', 3, 'symmetric');
  const server = watchServer(origin, network.spawn(network.internet, SERVER_BINARY, [
    '--addr', `${INTERNET_ADDRESS}:${PORT}`, '--metrics-addr', '127.0.0.1:0', '--tls-self-signed', '--media', 'sfu',
  ], SERVER_OPTIONS));
  await waitUntilServing(server);
});

test.afterAll(() => network?.remove());

/** The names on the remote videos `person` shows playing. */
const playing = (person: Person) => person.evaluate(() => [...document.querySelectorAll('video.remote')]
  .filter((v) => (v as HTMLVideoElement).videoWidth > 0 && !(v as HTMLVideoElement).paused)
  .map((video) => video.getAttribute('aria-label')).sort(), undefined);

test('behind symmetric NATs, with no STUN or TURN, Firefox and two Chromiums meet through the server', async () => {
  test.setTimeout(120_000);
  const url = `${origin}/call/${freshRoom()}`;
  const firefox = await network.firefoxIn(network.sites[0], FIREFOX_PREFS);
  const chromiums = [await network.chromiumIn(network.sites[1]), await network.chromiumIn(network.sites[2])];
  try {
    const foxPage = await firefox.newPage();
    await foxPage.evaluateOnNewDocument(recordPeerConnections);
    await foxPage.goto(url);
    const pages: Page[] = [];
    for (const browser of chromiums) {
      // The server's certificate is self-signed: accepted, as a person clicks through the warning.
      const context = await browser.newContext({ permissions: ['camera', 'microphone'], ignoreHTTPSErrors: true });
      const page = await context.newPage();
      await page.addInitScript(recordPeerConnections);
      await page.goto(url, { timeout: 20_000 });
      pages.push(page);
    }
    const [fox, ann, bob] = [firefoxPerson(foxPage), ...pages.map(chromiumPerson)];
    for (const [who, name] of [[fox, 'Fox'], [ann, 'Ann'], [bob, 'Bob']] as const) await who.send('Your name', name);
    await expect.poll(() => fox.evaluate(() => document.body.innerText.includes('Allow camera and microphone'), undefined)).toBe(true);
    await fox.press('Allow camera and microphone');
    for (const who of [fox, ann, bob]) await who.press('Start');
    const others = { Fox: ["Ann's video", "Bob's video"], Ann: ["Bob's video", "Fox's video"], Bob: ["Ann's video", "Fox's video"] };
    for (const [who, name] of [[fox, 'Fox'], [ann, 'Ann'], [bob, 'Bob']] as const) {
      await expect.poll(() => playing(who), { message: `${name} sees both`, timeout: 30_000 }).toEqual(others[name]);
      // Firefox's fake tone and Chromium's beeps are heard, each on its own tile.
      await expect.poll(async () => (await speakingVideos(who)).sort(), { message: `${name} hears both`, timeout: 15_000 })
        .toEqual(others[name]);
      await expectStatus(who, /^Connected with /);
      // One connection, straight to the server's own address: no relay, no address learned
      // from a STUN server.
      expect(await openConnections(who)).toBe(1);
      expect((await selectedPair(who)).remote).toBe('host');
      // Each sends its camera in simulcast layers (those nobody is sent are paused).
      expect(Object.keys(await sentLayers(who)).length, `${name}'s layers`).toBeGreaterThanOrEqual(2);
    }
  } finally {
    await firefox.close();
    for (const browser of chromiums) await browser.close();
  }
});

test('a person whose network blocks UDP reaches the server over ICE-TCP, at its default port', async () => {
  test.setTimeout(90_000);
  const [open, blocked] = [network.sites[1], network.sites[2]];
  network.blockUdp(blocked);
  const url = `${origin}/call/${freshRoom()}`;
  const browsers = [await network.chromiumIn(open), await network.chromiumIn(blocked)];
  try {
    const [ann, bob] = await Promise.all(browsers.map(async (browser) => {
      const context = await browser.newContext({ permissions: ['camera', 'microphone'], ignoreHTTPSErrors: true });
      const page = await context.newPage();
      await page.addInitScript(recordPeerConnections);
      await page.goto(url, { timeout: 20_000 });
      return chromiumPerson(page);
    }));
    await ann.send('Your name', 'Ann');
    await bob.send('Your name', 'Bob');
    await ann.press('Start');
    await bob.press('Start');
    await expect.poll(() => playing(bob), { message: 'Bob sees Ann', timeout: 30_000 }).toEqual(["Ann's video"]);
    await expect.poll(() => playing(ann), { message: 'Ann sees Bob', timeout: 30_000 }).toEqual(["Bob's video"]);
    // Bob's media goes over TCP to the server's own address (his own as the server saw it: his
    // NAT's); Ann's, whose UDP is open, over UDP.
    expect(await selectedPair(bob)).toEqual({ local: 'prflx', remote: 'host', protocol: 'tcp' });
    expect((await selectedPair(ann)).protocol).toBe('udp');
    // The block was real: Bob's browser tried UDP, and its router dropped it.
    expect(network.droppedUdp(blocked)).toBeGreaterThan(0);
  } finally {
    for (const browser of browsers) await browser.close();
    network.setNat('symmetric');
  }
});
