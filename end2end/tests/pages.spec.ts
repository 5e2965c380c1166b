import { test, expect } from '@playwright/test';
import { createHash } from 'node:crypto';
import { freshRoom } from './helpers';

test('the landing page starts a new call with a fresh room id, through the hydrated app', async ({ page }) => {
  await page.goto('/');
  const newCall = page.getByRole('button', { name: 'New call' });
  // Server-rendered disabled; only the wasm enables it, so this proves hydration.
  await expect(newCall).toBeEnabled();
  await newCall.click();
  await expect(page).toHaveURL(/\/call\/[A-Za-z0-9_-]{22}$/);
  await expect(page.getByRole('button', { name: 'Start' })).toBeEnabled();
  await expect(page.getByRole('button', { name: 'Hang up' })).toBeDisabled();
  await expect(page.getByLabel('Your video')).toBeVisible();
  await expect(page.getByLabel("The other person's video")).toBeAttached();
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
