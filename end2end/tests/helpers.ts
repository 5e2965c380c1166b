import { chromium, test as base, expect, type BrowserContext, type BrowserContextOptions, type Page } from '@playwright/test';
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { chromiumArgs, executablePath } from '../chromium.cjs';
import { type Browser as Puppeteer, type BrowserContext as PuppeteerContext } from 'puppeteer-core';
import * as people from './people';
import { chromiumPerson, firefoxPerson, launchFirefox, recordPeerConnections, type Engine, type Person } from './people';

export { recordPeerConnections };

export const freshRoom = () => randomBytes(12).toString('base64url');

type OpenPerson = (engine: Engine, path: string) => Promise<Person>;
type Open = (path: string, prepare?: (page: Page) => Promise<unknown>, options?: BrowserContextOptions) => Promise<Page>;

/**
 * `open(path)`: a Chromium page in its own browser context (its own person), closed when the
 * test ends so that no camera stays busy for the next test. Its camera is the browser's first
 * fake camera, which every page of the browser shares, unless `prepare` chooses another
 * ([tinyCamera]).
 * `person(engine, path)`: the same in Chromium or Firefox, for tests that mix engines. One
 * Firefox runs per worker, started by the first test that asks for it.
 */
export const test = base.extend<{ open: Open; person: OpenPerson }, { firefox: Puppeteer }>({
  open: async ({ browser }, use) => {
    const contexts: BrowserContext[] = [];
    await use(async (path, prepare, options) => {
      const context = await browser.newContext(options);
      contexts.push(context);
      const page = await context.newPage();
      await page.addInitScript(recordPeerConnections);
      await prepare?.(page);
      await page.goto(path);
      return page;
    });
    for (const context of contexts) await context.close();
  },
  firefox: [async ({}, use) => {
    const firefox = await launchFirefox();
    await use(firefox);
    await firefox.close();
  }, { scope: 'worker' }],
  person: async ({ open, firefox, baseURL }, use) => {
    const contexts: PuppeteerContext[] = [];
    await use(async (engine, path) => {
      if (engine === 'Chromium') return chromiumPerson(await open(path));
      const context = await firefox.createBrowserContext();
      contexts.push(context);
      // A window of its own: each person's page is in front, as on their own machine (a
      // background tab would have its animation frames and timers throttled).
      const page = await context.newPage({ type: 'window' });
      await page.evaluateOnNewDocument(recordPeerConnections);
      await page.goto(new URL(path, baseURL).href);
      return firefoxPerson(page);
    });
    for (const context of contexts) await context.close();
  },
});
export { expect };

export const start = (page: Page) => page.getByRole('button', { name: 'Start' }).click();
export const hangUp = (page: Page) => page.getByRole('button', { name: 'Hang up' }).click();
export const status = (page: Page) => page.getByRole('status');

/** Opens the bar's panel `name` (Chat, People or More), unless it is open already. */
export async function openPanel(page: Page, name: 'Chat' | 'People' | 'More') {
  const button = page.getByRole('button', { name: new RegExp(`^${name}`) });
  if ((await button.getAttribute('aria-expanded')) !== 'true') await button.click();
}

/** Bytes received over RTP by the newest peer connection, per media kind. */
export const inboundBytes = (page: Page) => people.inboundBytes(chromiumPerson(page));

/** Media really flows into `page`: remote video has a size and advances, RTP bytes grow. */
export const expectMediaFlowing = (page: Page) => people.expectMediaFlowing(chromiumPerson(page));

/** How many peer connections the page holds open. */
export const openConnections = (page: Page) => people.openConnections(chromiumPerson(page));

/**
 * Records, per tile, the longest time between two frames it showed, and when it last showed
 * one (`Date.now()`). A callback comes on the
 * page's main thread, which five browsers on two cores sometimes hold up for most of a
 * second while the compositor goes on showing frames: the gap between two callbacks is shared
 * among the frames shown in it (`presentedFrames`), so a held-up page is not taken for a
 * stopped video, and a video that stopped still is (one frame after the silence).
 */
export const recordFrameGaps = (page: Page) => page.evaluate(() => {
  const gaps: Record<string, number> = {};
  const seen: Record<string, number> = {};
  (window as any).__gaps = gaps;
  (window as any).__seen = seen;
  for (const video of document.querySelectorAll<HTMLVideoElement>('video.remote')) {
    let last = performance.now();
    let lastFrames: number | undefined;
    const shown = (now: number, frame: VideoFrameCallbackMetadata) => {
      const label = video.getAttribute('aria-label')!;
      // A new stream (the tile switched to the server's) counts its frames from zero.
      const frames = lastFrames !== undefined && frame.presentedFrames > lastFrames ? frame.presentedFrames - lastFrames : 1;
      gaps[label] = Math.max(gaps[label] ?? 0, (now - last) / frames);
      seen[label] = Date.now();
      last = now;
      lastFrames = frame.presentedFrames;
      video.requestVideoFrameCallback(shown);
    };
    video.requestVideoFrameCallback(shown);
  }
});
export const frameGaps = (page: Page) => page.evaluate(() => (window as any).__gaps as Record<string, number>);
/** When each tile recorded by [recordFrameGaps] last showed a frame (`Date.now()`). */
export const lastFrames = (page: Page) => page.evaluate(() => (window as any).__seen as Record<string, number>);

/** The remote view shows nothing any more. */
export const expectRemoteVideoStopped = (page: Page) => people.expectRemoteVideoStopped(chromiumPerson(page));

/** A browser that answers permission prompts like a person who says no to the camera. */
export async function withCameraDenied(run: (carol: Page) => Promise<void>) {
  const browser = await chromium.launch({
    executablePath,
    args: chromiumArgs({ extra: ['--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required'] }),
  });
  try {
    const context = await browser.newContext({ permissions: ['microphone'] });
    const carol = await context.newPage();
    await carol.addInitScript(recordPeerConnections);
    await run(carol);
  } finally {
    await browser.close();
  }
}

/** Media flows into both pages. */
export async function expectMediaFlowingBothWays(a: Page, b: Page) {
  await expectMediaFlowing(a);
  await expectMediaFlowing(b);
}

/** A call under way: Alice starts and waits, Bob joins, media flows both ways. */
export async function connectedPair(open: Open, origin = '', bobOrigin = origin, options?: BrowserContextOptions, room = freshRoom()) {
  const alice = await open(`${origin}/call/${room}`, undefined, options);
  const bob = await open(`${bobOrigin}/call/${room}`, undefined, options);
  await start(alice);
  await start(bob);
  await expectMediaFlowingBothWays(alice, bob);
  return { alice, bob, room };
}

/** A server process of a test's own; `log` collects what it prints (at level info). */
export type Server = ChildProcess & { log: string[] };

export function startServer(port: number, ...flags: string[]): Server {
  // ICE-TCP on any free port unless the test says: its default, the next port, may be another
  // test server's.
  const tcp = flags.includes('--media-tcp-addr') ? [] : ['--media-tcp-addr', '127.0.0.1:0'];
  return watchServer(`127.0.0.1:${port}`, spawn(
    SERVER_BINARY, ['--addr', `127.0.0.1:${port}`, '--metrics-addr', '127.0.0.1:0', ...tcp, ...flags], SERVER_OPTIONS,
  ));
}

/** The release server, and how to spawn it so that `watchServer` can read its log. */
export const SERVER_BINARY = path.join(__dirname, '../../target/release/duo');
export const SERVER_OPTIONS: SpawnOptions = {
  env: { ...process.env, LEPTOS_SITE_ROOT: path.join(__dirname, '../../target/site'), RUST_LOG: 'info', NO_COLOR: '1' },
  stdio: ['ignore', 'pipe', 'inherit'],
};

/** Collects the log of a server spawned with `SERVER_OPTIONS` (at `address`, for warnings). */
export function watchServer(address: string, child: ChildProcess): Server {
  const server = child as Server;
  server.log = [];
  let partial = '';
  server.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop()!;
    server.log.push(...lines);
    // Warnings and errors show in the test output; the rest only in `log`.
    for (const line of lines) if (/ (WARN|ERROR) /.test(line)) console.error(`server ${address}: ${line}`);
  });
  return server;
}

/** The first log line matching `pattern`, once the server has printed it. */
export async function logLine(server: Server, pattern: RegExp): Promise<RegExpMatchArray> {
  let found: RegExpMatchArray | null = null;
  await expect.poll(() => {
    found = server.log.map((line) => line.match(pattern)).find((m) => m !== null) ?? null;
    return found !== null;
  }, { timeout: 15_000, message: `the server logs ${pattern}` }).toBe(true);
  return found!;
}

/** Waits until the server says it listens. */
export const waitUntilServing = (server: Server) => logLine(server, /listening on https?:\/\//);

export const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code)));

/** The size and frame rate a test asks of a camera. */
type Camera = { width: number; height: number; frameRate: number };

/**
 * The browser's fake cameras (playwright.config.ts: `device-count`) that a peer connection
 * can send: Chromium's `fake_device_1` shows its picture in a `<video>` but gives a sender no
 * frame (media-source `frames` 0).
 */
const FAKE_CAMERAS = ['fake_device_0', 'fake_device_2', 'fake_device_3', 'fake_device_4', 'fake_device_5'];

/** The page's camera, asked for at `video`'s size, and the `camera`th of [FAKE_CAMERAS]
 * unless the page names one. */
const cameraOf = (video: Camera, camera = 0) => (page: Page) => page.addInitScript(({ video, label }) => {
  const mediaDevices = navigator.mediaDevices;
  const getUserMedia = mediaDevices.getUserMedia.bind(mediaDevices);
  mediaDevices.getUserMedia = async (constraints?: MediaStreamConstraints) => {
    if (!(constraints?.video === true || (constraints?.video && !(constraints.video as any).deviceId))) {
      return getUserMedia(constraints);
    }
    // Labels are listed only once the camera is allowed; refused, the browser says so itself.
    const device = (await mediaDevices.enumerateDevices()).find((device) => device.label === label);
    return getUserMedia({ ...constraints, video: device ? { ...video, deviceId: { exact: device.deviceId } } : video });
  };
}, { video, label: FAKE_CAMERAS[camera] });

/** Small video, so that several pages' encoders and decoders fit two cores. */
export const smallCamera = cameraOf({ width: 320, height: 240, frameRate: 15 });
/** A common laptop camera, which goes to the server in three simulcast layers. */
export const hdCamera = cameraOf({ width: 1280, height: 720, frameRate: 15 });
/**
 * Smaller still, for five pages on two cores, each encoding for up to four connections; each
 * `person` (0 to 4) with a camera of their own. Five pages sharing one fake camera had it stop
 * for all of them at once about one run in ten, never with a camera each (docs/performance.md,
 * the move test).
 */
export const tinyCamera = (person: number) => cameraOf({ width: 160, height: 120, frameRate: 10 }, person);

/** Each remote tile's video: its size and play time. */
export const tiles = (page: Page) => page.evaluate(() => [...document.querySelectorAll('video.remote')].map((v) => {
  const video = v as HTMLVideoElement;
  return { label: video.getAttribute('aria-label'), width: video.videoWidth, time: video.currentTime };
}));

/** `page` shows `count` other people (within `timeout` ms), and every one of their videos plays. */
export async function expectEveryoneVideoPlaying(page: Page, count: number, timeout = 30_000) {
  await expect.poll(async () => (await tiles(page)).filter((t) => t.width > 0).length, {
    timeout, message: `${count} remote videos with a size`,
  }).toBe(count);
  const before = await tiles(page);
  await expect.poll(async () => {
    const now = await tiles(page);
    return now.length === count && now.every((tile, i) => tile.time > before[i].time + 0.5);
  }, { timeout: 15_000, message: 'every remote video plays' }).toBe(true);
}
