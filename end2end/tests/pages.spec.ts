import { test, expect } from '@playwright/test';

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
