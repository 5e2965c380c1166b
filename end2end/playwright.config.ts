import { defineConfig } from '@playwright/test';

import { chromiumArgs, executablePath } from './chromium.cjs';
import { LAN_HOSTS, PORT, RELAY_PORT, TURN_PORT, TURN_SECRET, WRONG_SECRET_PORT, turnServerArgs } from './ports';

// Every test's pages come from 127.0.0.1, and each page opens a signaling socket when it
// loads and after each call: more sockets a minute than one real client opens. ICE-TCP on any
// free port: its default, the next port, is the next test server's.
const server = (port: number, ...flags: string[]) => ({
  command: ['../target/release/duo', '--addr', `127.0.0.1:${port}`, '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn',
    '--sockets-per-minute-per-client', '1000', '--media-tcp-addr', '127.0.0.1:0', ...flags].join(' '),
  url: `http://127.0.0.1:${port}/`,
  env: { LEPTOS_SITE_ROOT: '../target/site', LEPTOS_ENV: 'PROD' },
  reuseExistingServer: false,
  stdout: 'pipe' as const,
  timeout: 30_000,
});
// Every test's pages come from 127.0.0.1: more TURN credentials than one real client needs.
const turnFlags = (secret: string) =>
  ['--ice-server', `turn:127.0.0.1:${TURN_PORT}`, '--turn-secret', secret, '--relay-only', '--turn-credentials-per-client', '1000'];

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
      executablePath,
      args: chromiumArgs({
        extra: [
          // 30 fps fake cameras (the default is 20), so a 15 fps screen share stands apart; six,
          // so that the pages of a five-person call each have their own (helpers.ts: tinyCamera).
          '--use-fake-device-for-media-stream=fps=30,device-count=6',
          '--use-fake-ui-for-media-stream',
          '--autoplay-policy=no-user-gesture-required',
          // Names other machines would reach the server by (see LAN_HOSTS).
          `--host-resolver-rules=${LAN_HOSTS.map((host) => `MAP ${host} 127.0.0.1`).join(', ')}`,
        ],
        // Pages that tests serve through page.route count as public; let them reach loopback.
        features: ['LocalNetworkAccessChecks'],
      }),
    },
  },
  webServer: [
    server(PORT),
    server(RELAY_PORT, ...turnFlags(TURN_SECRET)),
    server(WRONG_SECRET_PORT, ...turnFlags('not-the-secret')),
    {
      command: ['turnserver', ...turnServerArgs(TURN_PORT, TURN_SECRET, 49160)].join(' '),
      port: TURN_PORT,
      reuseExistingServer: false,
      timeout: 30_000,
    },
  ],
});
