import { defineConfig } from '@playwright/test';

// The release server built by `cargo leptos build --release`, on its own port so that a
// `make run` on 3000 does not get in the way.
export const PORT = 3100;

export default defineConfig({
  testDir: './tests',
  timeout: 90_000,
  expect: { timeout: 15_000 },
  // Each test drives two or three Chromium pages with live video: one at a time on 2 cores.
  workers: 1,
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${PORT}`,
    permissions: ['camera', 'microphone'],
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--autoplay-policy=no-user-gesture-required',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        // Pages that tests serve through page.route count as public; let them reach loopback.
        '--disable-features=LocalNetworkAccessChecks',
      ],
    },
  },
  webServer: {
    command: `../target/release/duo --addr 127.0.0.1:${PORT} --log-level warn`,
    url: `http://127.0.0.1:${PORT}/`,
    env: { LEPTOS_SITE_ROOT: '../target/site', LEPTOS_ENV: 'PROD' },
    reuseExistingServer: false,
    stdout: 'pipe',
    timeout: 30_000,
  },
});
