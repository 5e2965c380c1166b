// One person's call page in either engine: Chromium through Playwright, or Firefox ESR through
// puppeteer-core over WebDriver BiDi (Playwright cannot drive a stock Firefox, and its own
// patched Firefox cannot be downloaded here). Tests that mix engines talk to a `Person`; the
// checks below run inside the page, so they read the same in both.
import { expect, type Page } from '@playwright/test';
import puppeteer, { type Browser as Puppeteer, type Page as PuppeteerPage } from 'puppeteer-core';

export type Engine = 'Chromium' | 'Firefox';

export interface Person {
  readonly engine: Engine;
  /** Runs `fn(arg)` in the page. */
  evaluate<A, R>(fn: (arg: A) => R | Promise<R>, arg: A): Promise<R>;
  /** Clicks the button (or disclosure summary) with this exact text, as a person does. */
  press(button: string): Promise<void>;
  /** Types into the field with this accessible name and presses Enter. */
  send(field: string, text: string): Promise<void>;
  /** Presses one key on the focused page. */
  key(key: string): Promise<void>;
}

export function chromiumPerson(page: Page): Person {
  return {
    engine: 'Chromium',
    evaluate: (fn, arg) => page.evaluate(fn as any, arg),
    press: (name) => page.locator('button, summary').getByText(name, { exact: true }).click(),
    send: async (field, text) => {
      await page.getByLabel(field, { exact: true }).fill(text);
      await page.getByLabel(field, { exact: true }).press('Enter');
    },
    key: (key) => page.keyboard.press(key),
  };
}

/** XPath literal for `text` (no quote in any name this suite uses). */
const quoted = (text: string) => {
  if (text.includes('"')) throw new Error(`cannot quote ${text}`);
  return `"${text}"`;
};

export function firefoxPerson(page: PuppeteerPage): Person {
  return {
    engine: 'Firefox',
    evaluate: (fn, arg) => page.evaluate(fn as any, arg) as any,
    // Puppeteer's ARIA selectors need the CDP accessibility tree, which Firefox does not
    // offer: find controls by their text and `aria-label` instead. Locators wait until the
    // element is visible and enabled, as Playwright's do.
    press: (name) => page.locator(`::-p-xpath(//*[self::button or self::summary][normalize-space(.)=${quoted(name)}])`).click(),
    send: async (field, text) => {
      // The field is named by its `aria-label`, or by the `<label>` it sits in.
      const named = `//input[@aria-label=${quoted(field)}] | //label[normalize-space(text()[1])=${quoted(field)}]//input`;
      await page.locator(`::-p-xpath(${named})`).fill(text);
      await page.keyboard.press('Enter');
    },
    key: (key) => page.keyboard.press(key as any),
  };
}

/**
 * Firefox ESR from Debian, headless, with a fake camera and microphone and no permission
 * prompt. Loopback candidates are allowed because both browsers run on this machine. Autoplay
 * keeps Firefox's own default, so remote video plays only because the page gets it right.
 */
export function launchFirefox(): Promise<Puppeteer> {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX ?? '/usr/bin/firefox-esr',
    headless: true,
    extraPrefsFirefox: FIREFOX_PREFS,
  });
}

/** A fake camera and microphone, no permission prompt, loopback ICE candidates allowed. */
export const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
};

/**
 * Records every RTCPeerConnection the page makes, so tests can read real `getStats`:
 * `__peerConnections` holds them all, and `__newestPeerConnection()` gives the newest one not
 * closed (else the newest), the one the call uses.
 */
export const recordPeerConnections = () => {
  const Native = window.RTCPeerConnection;
  const made: RTCPeerConnection[] = [];
  (window as any).__peerConnections = made;
  (window as any).__newestPeerConnection = () =>
    made.findLast((pc) => pc.connectionState !== 'closed') ?? made[made.length - 1];
  window.RTCPeerConnection = class extends Native {
    constructor(config?: RTCConfiguration) {
      super(config);
      made.push(this);
    }
  } as typeof RTCPeerConnection;
};

// ---- Checks that run inside the page (any engine) ----

type Evaluates = Pick<Person, 'evaluate'>;

export const statusText = (person: Evaluates) =>
  person.evaluate(() => document.querySelector('[role="status"]')?.textContent ?? '', undefined);

export async function expectStatus(person: Evaluates, expected: string | RegExp, timeout = 15_000) {
  await expect.poll(() => statusText(person), { timeout, message: 'the status line' })
    .toEqual(typeof expected === 'string' ? expected : expect.stringMatching(expected));
}

/** Whether a text node reading exactly `text` is on screen. */
export const showsText = (person: Evaluates, text: string) => person.evaluate((text) => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.textContent?.trim() === text && node.parentElement?.checkVisibility()) return true;
  }
  return false;
}, text);

/** Bytes received over RTP by the newest live peer connection, per media kind. */
export const inboundBytes = (person: Evaluates) => person.evaluate(async () => {
  const totals = { audio: 0, video: 0 };
  const newest: RTCPeerConnection | undefined = (window as any).__newestPeerConnection();
  if (!newest || newest.connectionState === 'closed') return totals;
  const stats = await newest.getStats();
  stats.forEach((report: any) => {
    if (report.type === 'inbound-rtp' && (report.kind === 'audio' || report.kind === 'video')) {
      totals[report.kind as 'audio' | 'video'] += report.bytesReceived ?? 0;
    }
  });
  return totals;
}, undefined);

/** The sum of one `inbound-rtp` field of `kind` on the newest peer connection. */
export const inboundStat = (person: Evaluates, kind: 'audio' | 'video', field: string) =>
  person.evaluate(async ({ kind, field }) => {
    const stats = await (window as any).__newestPeerConnection().getStats();
    let value = 0;
    stats.forEach((report: any) => {
      if (report.type === 'inbound-rtp' && report.kind === kind) value += report[field] ?? 0;
    });
    return value;
  }, { kind, field });

/** How much an `inbound-rtp` field grows over `ms`. */
export async function growth(person: Evaluates, kind: 'audio' | 'video', field: string, ms = 1500) {
  const before = await inboundStat(person, kind, field);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (await inboundStat(person, kind, field)) - before;
}

/** The cap on the video each live connection of the page sends (`null`: none). */
export const videoCaps = (person: Evaluates) => person.evaluate(() => ((window as any).__peerConnections as RTCPeerConnection[])
  .filter((pc) => pc.connectionState === 'connected')
  .map((pc) => pc.getSenders().find((s) => s.track?.kind === 'video')?.getParameters().encodings[0]?.maxBitrate ?? null),
undefined);

/** The accessible names of the remote videos the page shows as speaking, in page order. */
/** How many of the page's peer connections are not closed. */
export const openConnections = (person: Evaluates) => person.evaluate(() =>
  ((window as any).__peerConnections as RTCPeerConnection[]).filter((pc) => pc.connectionState !== 'closed').length, undefined);

export const speakingVideos = (person: Evaluates) => person.evaluate(() =>
  [...document.querySelectorAll('.tile.speaking video.remote')].map((video) => video.getAttribute('aria-label')), undefined);

/**
 * Candidate types of the pair the newest peer connection uses, and its protocol (`udp`, or
 * `tcp` for ICE-TCP). Chromium names it on the `transport` report; Firefox has no `transport`
 * report and marks the pair `selected`.
 */
export const selectedPair = (person: Evaluates) => person.evaluate(async () => {
  const stats: RTCStatsReport = await (window as any).__newestPeerConnection().getStats();
  const reports = [...stats.values()] as any[];
  const transport = reports.find((r) => r.type === 'transport' && r.selectedCandidatePairId);
  const pair = transport ? stats.get(transport.selectedCandidatePairId) : reports.find((r) => r.type === 'candidate-pair' && r.selected);
  return {
    local: pair && stats.get(pair.localCandidateId)?.candidateType,
    remote: pair && stats.get(pair.remoteCandidateId)?.candidateType,
    protocol: pair && stats.get(pair.localCandidateId)?.protocol,
  };
}, undefined);

const remoteVideo = (person: Evaluates) => person.evaluate(() => {
  // With no one else in the call, there is no one's video.
  const video = document.querySelector('video.remote') as HTMLVideoElement | null;
  return { width: video?.videoWidth ?? 0, time: video?.currentTime ?? 0, hasStream: (video?.srcObject ?? null) !== null };
}, undefined);

/** Media really flows into this page: remote video has a size and advances, RTP bytes grow. */
export async function expectMediaFlowing(person: Evaluates) {
  await expectStatus(person, 'Connected.');
  await expect.poll(async () => (await remoteVideo(person)).width, { timeout: 20_000, message: 'remote video has a size' }).toBeGreaterThan(0);
  const before = await remoteVideo(person);
  const bytesBefore = await inboundBytes(person);
  await expect.poll(async () => (await remoteVideo(person)).time, { timeout: 10_000, message: 'remote video plays' }).toBeGreaterThan(before.time + 0.5);
  await expect.poll(async () => (await inboundBytes(person)).video, { timeout: 10_000, message: 'video bytes arrive' }).toBeGreaterThan(bytesBefore.video + 1000);
  await expect.poll(async () => (await inboundBytes(person)).audio, { timeout: 10_000, message: 'audio bytes arrive' }).toBeGreaterThan(bytesBefore.audio + 100);
}

/** The remote view shows nothing any more. */
export async function expectRemoteVideoStopped(person: Evaluates) {
  await expect.poll(async () => (await remoteVideo(person)).hasStream, { message: 'remote video is cleared' }).toBe(false);
}

/** The widths of the video frames the newest peer connection receives now (0 until one came). */
export const receivedWidths = (person: Evaluates) => person.evaluate(async () => {
  const stats = await (window as any).__newestPeerConnection().getStats();
  const widths: number[] = [];
  stats.forEach((report: any) => {
    if (report.type === 'inbound-rtp' && report.kind === 'video') widths.push(report.frameWidth ?? 0);
  });
  return widths;
}, undefined);

/** Each simulcast layer the newest peer connection sends, by `rid`: bytes sent so far, and the
 * width of its frames. */
export const sentLayers = (person: Evaluates) => person.evaluate(async () => {
  const stats = await (window as any).__newestPeerConnection().getStats();
  const layers: Record<string, { bytes: number; width: number }> = {};
  stats.forEach((report: any) => {
    if (report.type === 'outbound-rtp' && report.kind === 'video' && report.rid) {
      layers[report.rid] = { bytes: report.bytesSent ?? 0, width: report.frameWidth ?? 0 };
    }
  });
  return layers;
}, undefined);
