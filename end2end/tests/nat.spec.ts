// Calls between two home networks behind real NATs (network namespaces, ./netns.ts), with a
// STUN server and no TURN: behind NATs that map every destination to a new port (symmetric),
// no path exists, and the page must say what would help, once; behind NATs that keep the port,
// the same call connects, which shows the networks themselves work.
import { type Browser, type Page } from '@playwright/test';
import {
  test, expect, expectMediaFlowing, freshRoom, recordPeerConnections, SERVER_BINARY, SERVER_OPTIONS, start, status,
  waitUntilServing, watchServer,
} from './helpers';
import { INTERNET_ADDRESS, NatNetwork, type NatKind, type Site } from './netns';
import { chromiumPerson, selectedPair } from './people';

// Inside the test's own internet: no other server is there.
const PORT = 3000;
const STUN_PORT = 3478;
const origin = `https://${INTERNET_ADDRESS}:${PORT}`;
const NEEDS_RELAY = 'Could not connect: your networks need a relay (TURN) server, and none was offered for this call. '
  + 'Ask whoever runs this server to set one up.';

// Network namespaces and NATs need root: without it the test fails loudly, never skips.
test.beforeAll(() => {
  expect(process.getuid?.(), 'nat.spec.ts builds network namespaces: run it as root').toBe(0);
});

test.describe.configure({ retries: 1 });

let network: NatNetwork;

test.beforeAll(async () => {
  network = NatNetwork.create('nat', 2, 'symmetric');
  const stun = network.spawn(network.internet, 'turnserver', [
    '-n', '--stun-only', `--listening-ip=${INTERNET_ADDRESS}`, `--listening-port=${STUN_PORT}`, '--no-cli', '--no-tls',
    '--no-dtls', '--log-file=stdout', `--pidfile=${network.file('stun.pid')}`,
  ], { stdio: 'ignore' });
  const server = watchServer(origin, network.spawn(network.internet, SERVER_BINARY, [
    '--addr', `${INTERNET_ADDRESS}:${PORT}`, '--metrics-addr', '127.0.0.1:0', '--tls-self-signed',
    '--ice-server', `stun:${INTERNET_ADDRESS}:${STUN_PORT}`,
  ], SERVER_OPTIONS));
  await waitUntilServing(server);
  await expect.poll(() => stun.exitCode === null && network.listensOnUdp(network.internet, INTERNET_ADDRESS, STUN_PORT),
    { message: 'the STUN server listens' }).toBe(true);
});

test.afterAll(() => network?.remove());

/**
 * Records, in the page, every text the status line takes (each change of it, even to the same
 * text: that is what a screen reader may announce again), every unhandled promise rejection,
 * and each peer connection's `connectionState` changes.
 */
const recordWhatHappens = () => {
  const w = window as any;
  w.__said = [] as string[];
  w.__rejections = [] as string[];
  w.__states = [] as string[][];
  window.addEventListener('unhandledrejection', (event) => w.__rejections.push(String(event.reason)));
  const statusOf = (node: Node) => (node instanceof Element ? node : node.parentElement)?.closest('[role="status"]');
  new MutationObserver((records) => {
    const line = records.map((record) => statusOf(record.target)).find(Boolean);
    if (line) w.__said.push(line.textContent);
  }).observe(document, { subtree: true, childList: true, characterData: true });
  const Recorded = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Recorded {
    constructor(config?: RTCConfiguration) {
      super(config);
      const states: string[] = [];
      w.__states.push(states);
      this.addEventListener('connectionstatechange', () => states.push(this.connectionState));
    }
  } as typeof RTCPeerConnection;
};

interface Caller { browser: Browser; page: Page; errors: Error[] }

/** A Chromium in `site`, on the call page of `room`, its page errors collected. */
async function personIn(site: Site, room: string): Promise<Caller> {
  const browser = await network.chromiumIn(site);
  // The server's certificate is self-signed: accepted, as a person clicks through the warning.
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const errors: Error[] = [];
  page.on('pageerror', (error) => errors.push(error));
  await page.addInitScript(recordPeerConnections);
  await page.addInitScript(recordWhatHappens);
  await page.goto(`${origin}/call/${room}`, { timeout: 20_000 });
  await expect(page.getByRole('button', { name: 'Start' }), 'the page hydrates inside its site').toBeEnabled({ timeout: 20_000 });
  return { browser, page, errors };
}

/** A call between the two sites behind NATs of `kind`: both press Start, then `run`; the
 * browsers are closed whatever happens. */
async function callThrough(kind: NatKind, run: (people: Caller[]) => Promise<void>) {
  network.setNat(kind);
  const room = freshRoom();
  const people: Caller[] = [];
  try {
    for (const site of network.sites) people.push(await personIn(site, room));
    for (const { page } of people) await start(page);
    await run(people);
  } finally {
    for (const { browser } of people) await browser.close();
  }
}

const recorded = (page: Page) => page.evaluate(() => {
  const w = window as any;
  return { said: w.__said as string[], rejections: w.__rejections as string[], states: w.__states as string[][] };
});

// Once in a full CI run (of several here) the first of these timed out with no step named;
// every wait now has its own limit and message, so a next failure says where it stood, and
// the file is tried a second time (a fresh worker builds the networks anew) until the cause
// is known. A second failure fails the run.
test('behind symmetric NATs with no relay, the page says at once that a relay is needed, and says it once', async () => {
  await callThrough('symmetric', async (people) => {
    // Within 20 s of both pressing Start (a timeout of 0 would mean none: at least 1 ms).
    const deadline = Date.now() + 20_000;
    for (const { page } of people) {
      await expect(status(page)).toHaveText(NEEDS_RELAY, { timeout: Math.max(1, deadline - Date.now()) });
    }
    // Long enough for a retry loop to show: ICE was restarted every 5 s, and Chromium gives
    // up on a restart after about 15 s.
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    for (const { page, errors } of people) {
      const { said, rejections, states } = await recorded(page);
      expect(said.filter((text) => text === NEEDS_RELAY), `${said}`).toHaveLength(1);
      expect(said.filter((text) => /interrupted/i.test(text)), `${said}`).toEqual([]);
      expect(said[said.length - 1]).toBe(NEEDS_RELAY);
      // The browser gave up on the one connection the call used, and nothing started it again.
      expect(states.filter((changes) => changes.length)).toEqual([['connecting', 'failed']]);
      expect(rejections).toEqual([]);
      expect(errors.map(String)).toEqual([]);
    }
  });
});

test('behind NATs that keep the port, the same call connects through them', async () => {
  await callThrough('endpoint-independent', async (people) => {
    for (const { page, errors } of people) {
      await expectMediaFlowing(page);
      // Through the other side's NAT: the address its STUN request (or its first check) came from.
      expect(['srflx', 'prflx']).toContain((await selectedPair(chromiumPerson(page))).remote);
      expect((await recorded(page)).rejections).toEqual([]);
      expect(errors.map(String)).toEqual([]);
    }
  });
});
