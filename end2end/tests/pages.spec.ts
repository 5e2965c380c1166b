import { type Page } from '@playwright/test';
import { createHash } from 'node:crypto';
import { expect, expectMediaFlowingBothWays, freshRoom, start, test } from './helpers';

test('the landing page starts a new call with a fresh room id, through the hydrated app', async ({ page }) => {
  await page.goto('/');
  const newCall = page.getByRole('button', { name: 'New call' });
  // Server-rendered disabled; only the wasm enables it, so this proves hydration.
  await expect(newCall).toBeEnabled();
  await newCall.click();
  await expect(page).toHaveURL(/\/call\/[A-Za-z0-9_-]{22}$/);
  await expect(page.getByRole('button', { name: 'Start' })).toBeEnabled();
  // The join screen: no call to hang up yet, and no one else's video.
  await expect(page.getByRole('button', { name: 'Hang up' })).toHaveCount(0);
  await expect(page.getByLabel('Your video')).toBeVisible();
  await expect(page.getByLabel("The other person's video")).toHaveCount(0);
  await expect(page.getByRole('status')).toHaveText('Press Start to join the call.');

  // Two fresh calls never share a room.
  const first = page.url();
  await page.goto('/');
  await page.getByRole('button', { name: 'New call' }).click();
  await expect(page).toHaveURL(/\/call\//);
  expect(page.url()).not.toBe(first);
});

test('a bad room id gets a friendly not-found page with status 404', async ({ page }) => {
  for (const path of ['/call/not.a.room', `/call/${'x'.repeat(65)}`, '/no/such/page']) {
    const response = await page.goto(path);
    expect(response?.status(), path).toBe(404);
    await expect(page.getByRole('heading', { name: "This call link doesn't work" })).toBeVisible();
    await expect(page.getByRole('link', { name: 'Start a new call' })).toHaveAttribute('href', '/');
  }
});

test('the front end is named by its content, sent compressed, cached for good; pages are not cached', async ({ page, request }) => {
  const response = await page.goto(`/call/${'r'.repeat(22)}`);
  const headers = response!.headers();
  expect(headers['cache-control']).toBe('no-store');
  expect(headers['content-encoding']).toBe('br');
  expect(headers['vary']).toContain('accept-encoding');
  const linked = await page.evaluate(() => ({
    wasm: document.querySelector<HTMLLinkElement>('link[rel="preload"][as="fetch"]')!.getAttribute('href')!,
    js: document.querySelector<HTMLLinkElement>('link[rel="modulepreload"]')!.getAttribute('href')!,
    css: document.querySelector<HTMLLinkElement>('link[rel="stylesheet"]')!.getAttribute('href')!,
  }));
  const types = { wasm: 'application/wasm', js: 'text/javascript', css: 'text/css' };
  for (const [kind, href] of Object.entries(linked) as [keyof typeof types, string][]) {
    const [, hash] = href.match(new RegExp(`^/pkg/duo\\.([A-Za-z0-9_-]{22})\\.${kind}$`)) ?? [];
    expect(hash, href).toBeTruthy();
    for (const encoding of ['br', 'gzip']) {
      const file = await request.get(href, { headers: { 'Accept-Encoding': encoding } });
      expect(file.status(), href).toBe(200);
      expect(file.headers()['content-type'], href).toContain(types[kind]);
      expect(file.headers()['content-encoding'], `${href} ${encoding}`).toBe(encoding);
      expect(file.headers()['cache-control'], href).toBe('public, max-age=31536000, immutable');
      expect(file.headers()['vary'], href).toContain('accept-encoding');
      // The name is the content's hash (MD5, base64url), so a changed file gets a new name.
      // (The JavaScript is rewritten after hashing, to name the hashed wasm.)
      if (kind !== 'js') expect(createHash('md5').update(await file.body()).digest('base64url'), href).toBe(hash);
    }
  }
  // An old release's file is gone, and its 404 is not cached.
  const gone = await request.get('/pkg/duo.AAAAAAAAAAAAAAAAAAAAAA.wasm');
  expect(gone.status()).toBe(404);
  expect(gone.headers()['cache-control']).toBeUndefined();
});

test('a repeat visit takes the front end from the cache: it downloads no wasm', async ({ page }) => {
  const wasmFromNetwork: boolean[] = [];
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.responseReceived', (event) => {
    if (event.response.url.endsWith('.wasm')) wasmFromNetwork.push(!event.response.fromDiskCache && !event.response.fromMemoryCache);
  });
  for (let visit = 0; visit < 2; visit++) {
    await page.goto(`/call/${freshRoom()}`);
    await expect(page.getByRole('button', { name: 'Start' })).toBeEnabled();
  }
  expect(wasmFromNetwork).toEqual([true, false]);
});

/** What goes wrong in `page` from now on, as it would show in the console or the network panel:
 * console errors, uncaught errors, requests that fail or get an error status. Also the path of
 * every request of the page's own site. */
function watchForErrors(page: Page, site: string) {
  const seen = { errors: [] as string[], paths: [] as string[] };
  const origin = new URL(site).origin;
  page.on('console', (message) => {
    if (message.type() === 'error') seen.errors.push(`console: ${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => seen.errors.push(`uncaught: ${error.message}`));
  page.on('requestfailed', (request) => seen.errors.push(`failed: ${request.url()} (${request.failure()?.errorText})`));
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.origin === origin) seen.paths.push(url.pathname);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) seen.errors.push(`status ${response.status()}: ${response.url()}`);
  });
  return seen;
}

test('no console error and no failed request on the landing page, the join screen and in a call', async ({ open, baseURL }) => {
  let home!: ReturnType<typeof watchForErrors>;
  const landing = await open('/', async (page) => { home = watchForErrors(page, baseURL!); });
  await expect(landing.getByRole('button', { name: 'New call' })).toBeEnabled();
  // The tab shows the SVG icon (asked for once loaded); no PNG or .ico on a first visit.
  await expect.poll(() => home.paths).toContain('/icon.svg');
  expect(home.paths.filter((path) => /\.(png|ico)$/.test(path))).toEqual([]);
  // The manifest, fetched and parsed by the browser under the page's own policy.
  const cdp = await landing.context().newCDPSession(landing);
  const manifest = await cdp.send('Page.getAppManifest');
  expect(new URL(manifest.url).pathname).toBe('/manifest.webmanifest');
  expect(manifest.errors).toEqual([]);
  expect(JSON.parse(manifest.data)).toMatchObject({ name: 'Duo', start_url: '/', display: 'standalone' });
  // What installing checks (the manifest, an icon big enough that downloads and decodes) finds
  // nothing wrong but that a test's browser context is a private one.
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  expect(installabilityErrors.filter(({ errorId }) => errorId !== 'in-incognito')).toEqual([]);
  expect(home.errors).toEqual([]);

  // The join screen: the page before Start, with its preview where the camera is allowed.
  const room = freshRoom();
  const watched = new Map<Page, ReturnType<typeof watchForErrors>>();
  const watch = async (page: Page) => { watched.set(page, watchForErrors(page, baseURL!)); };
  const alice = await open(`/call/${room}`, watch);
  await expect(alice.getByRole('button', { name: 'Start' })).toBeEnabled();
  await expect.poll(() => watched.get(alice)!.paths).toContain('/icon.svg');
  expect(watched.get(alice)!.errors).toEqual([]);

  // In a call of two.
  const bob = await open(`/call/${room}`, watch);
  await start(alice);
  await start(bob);
  await expectMediaFlowingBothWays(alice, bob);
  for (const [page, { errors }] of watched) expect(errors, page === alice ? 'Alice' : 'Bob').toEqual([]);
  expect(home.errors).toEqual([]);
});
