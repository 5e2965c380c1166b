import { test as base, expect, type BrowserContext, type BrowserContextOptions, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

export const freshRoom = () => randomBytes(12).toString('base64url');

/** Records every RTCPeerConnection the page makes, so tests can read real `getStats`. */
export const recordPeerConnections = () => {
  const Native = window.RTCPeerConnection;
  const made: RTCPeerConnection[] = [];
  (window as any).__peerConnections = made;
  window.RTCPeerConnection = class extends Native {
    constructor(config?: RTCConfiguration) {
      super(config);
      made.push(this);
    }
  } as typeof RTCPeerConnection;
};

type Open = (path: string, prepare?: (page: Page) => Promise<void>, options?: BrowserContextOptions) => Promise<Page>;

/**
 * `open(path)`: a page in its own browser context (its own camera, its own person), closed
 * when the test ends so that no camera stays busy for the next test.
 */
export const test = base.extend<{ open: Open }>({
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
});
export { expect };

export const start = (page: Page) => page.getByRole('button', { name: 'Start' }).click();
export const hangUp = (page: Page) => page.getByRole('button', { name: 'Hang up' }).click();
export const status = (page: Page) => page.getByRole('status');

/** Bytes received over RTP by the newest peer connection, per media kind. */
export async function inboundBytes(page: Page): Promise<{ audio: number; video: number }> {
  return page.evaluate(async () => {
    const peers: RTCPeerConnection[] = (window as any).__peerConnections;
    const live = peers.filter((pc) => pc.connectionState !== 'closed');
    const totals = { audio: 0, video: 0 };
    if (live.length === 0) return totals;
    const stats = await live[live.length - 1].getStats();
    stats.forEach((report: any) => {
      if (report.type === 'inbound-rtp' && (report.kind === 'audio' || report.kind === 'video')) {
        totals[report.kind as 'audio' | 'video'] += report.bytesReceived ?? 0;
      }
    });
    return totals;
  });
}

const remoteVideoState = (page: Page) =>
  page.getByLabel('Remote video').evaluate((video: HTMLVideoElement) => ({
    width: video.videoWidth,
    height: video.videoHeight,
    time: video.currentTime,
    hasStream: video.srcObject !== null,
  }));

/** Media really flows into `page`: remote video has a size and advances, RTP bytes grow. */
export async function expectMediaFlowing(page: Page) {
  await expect(status(page)).toHaveText('Connected.');
  await expect.poll(async () => (await remoteVideoState(page)).width, { timeout: 20_000 }).toBeGreaterThan(0);
  const before = await remoteVideoState(page);
  const bytesBefore = await inboundBytes(page);
  await expect.poll(async () => (await remoteVideoState(page)).time, { timeout: 10_000 }).toBeGreaterThan(before.time + 0.5);
  await expect.poll(async () => (await inboundBytes(page)).video, { timeout: 10_000 }).toBeGreaterThan(bytesBefore.video + 1000);
  await expect.poll(async () => (await inboundBytes(page)).audio, { timeout: 10_000 }).toBeGreaterThan(bytesBefore.audio + 100);
}

/** The remote view shows nothing any more. */
export async function expectRemoteVideoStopped(page: Page) {
  await expect.poll(async () => (await remoteVideoState(page)).hasStream).toBe(false);
}

/** Media flows into both pages. */
export async function expectMediaFlowingBothWays(a: Page, b: Page) {
  await expectMediaFlowing(a);
  await expectMediaFlowing(b);
}

/** A call under way: Alice starts and waits, Bob joins, media flows both ways. */
export async function connectedPair(open: Open, origin = '', bobOrigin = origin, options?: BrowserContextOptions) {
  const room = freshRoom();
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
  const server = spawn(
    path.join(__dirname, '../../target/release/duo'),
    ['--addr', `127.0.0.1:${port}`, '--metrics-addr', '127.0.0.1:0', ...flags],
    {
      env: { ...process.env, LEPTOS_SITE_ROOT: path.join(__dirname, '../../target/site'), RUST_LOG: 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  ) as Server;
  server.log = [];
  let partial = '';
  server.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop()!;
    server.log.push(...lines);
    // Warnings and errors show in the test output; the rest only in `log`.
    for (const line of lines) if (/ (WARN|ERROR) /.test(line)) console.error(`server :${port}: ${line}`);
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
