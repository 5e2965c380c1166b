// Two people on two machines: HTTPS built into the server (given or self-signed certificates,
// renewed mid-call), nginx in front with the deployment guide's configuration, and what the
// page says on a plain http:// address from another machine. Other machines are simulated by
// host names the browser maps to 127.0.0.1 (LAN_HOSTS in ../ports.ts).
import { type Page } from '@playwright/test';
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { BEHIND_PROXY_PORT, PORT, PROXY_PORT, SELF_SIGNED_PORT, TLS_PORT } from '../ports';
import {
  test, expect, connectedPair, expectMediaFlowing, exited, freshRoom, logLine, startServer, status, waitUntilServing,
} from './helpers';

/** Browsers that accept the test's own certificates, as a person clicks through the warning. */
const acceptCertificate = { ignoreHTTPSErrors: true };

let dir: string;
test.beforeEach(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'duo-https-')); });
test.afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A certificate for `names` made with openssl: PEM files and the SHA-256 fingerprint. */
function makeCertificate(label: string, names: string[]) {
  const cert = path.join(dir, `${label}.pem`);
  const key = path.join(dir, `${label}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** The SHA-256 fingerprint of the certificate a new TLS handshake with the server presents. */
function presentedFingerprint(port: number, servername = 'localhost'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

/** The response headers of `GET url`, certificate unchecked. */
function headersOf(url: string): Promise<Record<string, string | string[] | undefined>> {
  return new Promise((resolve, reject) => {
    https.get(url, { rejectUnauthorized: false }, (response) => {
      response.resume();
      resolve(response.headers);
    }).on('error', reject);
  });
}

/** Records the URL of every WebSocket a page opens. */
function recordSockets(page: Page): string[] {
  const urls: string[] = [];
  page.on('websocket', (socket) => urls.push(socket.url()));
  return urls;
}

test('two machines call over HTTPS and wss, and a renewed certificate drops nothing', async ({ open }) => {
  const names = ['alice-laptop.test', 'bob-phone.test', 'localhost'];
  const first = makeCertificate('first', names);
  const live = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  copyFileSync(first.cert, live.cert);
  copyFileSync(first.key, live.key);
  const server = startServer(TLS_PORT, '--tls-cert', live.cert, '--tls-key', live.key,
    '--allowed-origin', `https://alice-laptop.test:${TLS_PORT}`, '--allowed-origin', `https://bob-phone.test:${TLS_PORT}`);
  try {
    await waitUntilServing(server);
    expect(await presentedFingerprint(TLS_PORT)).toBe(first.fingerprint);
    const room = freshRoom();
    const sockets = new Map<Page, string[]>();
    const watch = async (page: Page) => { sockets.set(page, recordSockets(page)); };
    const alice = await open(`https://alice-laptop.test:${TLS_PORT}/call/${room}`, watch, acceptCertificate);
    const bob = await open(`https://bob-phone.test:${TLS_PORT}/call/${room}`, watch, acceptCertificate);
    for (const page of [alice, bob]) {
      expect(await page.evaluate(() => window.isSecureContext), 'an https page may use the camera').toBe(true);
      await page.getByRole('button', { name: 'Start' }).click();
    }
    for (const page of [alice, bob]) await expectMediaFlowing(page);
    for (const [page, host] of [[alice, 'alice-laptop.test'], [bob, 'bob-phone.test']] as const) {
      expect(sockets.get(page)).toHaveLength(1);
      expect(sockets.get(page)![0].startsWith(`wss://${host}:${TLS_PORT}/ws/${room}?session=`)).toBe(true);
    }

    // A renewal mid-call, and the reload signal (the file watcher may be first: either way;
    // tests/tls.rs checks each path alone).
    const second = makeCertificate('second', names);
    copyFileSync(second.cert, live.cert);
    copyFileSync(second.key, live.key);
    server.kill('SIGHUP');
    await expect.poll(() => presentedFingerprint(TLS_PORT), { timeout: 10_000 }).toBe(second.fingerprint);
    for (const page of [alice, bob]) {
      await expect(status(page)).toHaveText('Connected.');
      await expectMediaFlowing(page);
      expect(sockets.get(page), 'the signaling socket was never dropped and reopened').toHaveLength(1);
    }
  } finally {
    server.kill('SIGKILL');
  }
});

test('--tls-self-signed: one flag, a call, and the fingerprint the log shows is the one served', async ({ open }) => {
  // duo-lan.test stands for this machine's name on the LAN, which the server allows itself
  // (it is not this test machine's real name, so it is named here).
  const server = startServer(SELF_SIGNED_PORT, '--tls-self-signed', '--allowed-origin', `https://duo-lan.test:${SELF_SIGNED_PORT}`);
  try {
    const [, logged] = await logLine(server, /sha256=([0-9A-F:]{95})/);
    await waitUntilServing(server);
    expect(await presentedFingerprint(SELF_SIGNED_PORT)).toBe(logged);
    const headers = await headersOf(`https://localhost:${SELF_SIGNED_PORT}/`);
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    // Never HSTS with a self-signed certificate: people must be able to accept its warning again.
    expect(headers['strict-transport-security']).toBeUndefined();
    await connectedPair(open, `https://duo-lan.test:${SELF_SIGNED_PORT}`, `https://localhost:${SELF_SIGNED_PORT}`, acceptCertificate);
  } finally {
    server.kill('SIGKILL');
  }
});

test('on a plain http:// address from another machine, the page says calls need HTTPS and Start stays off', async ({ open }) => {
  const room = freshRoom();
  const page = await open(`http://duo-lan.test:${PORT}/call/${room}`);
  expect(await page.evaluate(() => window.isSecureContext)).toBe(false);
  await expect(status(page)).toContainText('Calls need a secure (HTTPS) address');
  // The server speaks plain HTTP on this port, so no https:// link to it is offered.
  await expect(status(page)).toContainText('Ask whoever runs this server to turn on HTTPS');
  await expect(status(page)).not.toContainText('https://duo-lan.test');
  await expect(page.getByRole('button', { name: 'Start' })).toBeDisabled();
  // Nothing that blames the camera or offers a way that fails the same way.
  await expect(page.getByRole('button', { name: 'Join with audio only' })).toHaveCount(0);
  await expect(page.getByRole('button', { name: 'Watch and listen only' })).toHaveCount(0);
  await expect(page.getByText(/Camera or microphone unavailable/)).toHaveCount(0);
});

test('the page policy runs the nonce-carrying hydration script and blocks any other inline script', async ({ open }) => {
  const room = freshRoom();
  const page = await open(`/call/${room}`, async (page) => {
    await page.addInitScript(() => {
      (window as any).__violations = [];
      document.addEventListener('securitypolicyviolation', (event) => (window as any).__violations.push(event.violatedDirective));
    });
    // As if someone managed to inject markup into the page: same response, same headers.
    await page.route(`**/call/${room}`, async (route) => {
      const response = await route.fetch();
      const body = (await response.text()).replace('</body>', '<script>window.__injected = true;</script></body>');
      await route.fulfill({ response, body });
    });
  });
  // Start is enabled only by the hydrated app: the nonce'd script ran, and the wasm with it.
  await expect(page.getByRole('button', { name: 'Start' })).toBeEnabled();
  expect(await page.evaluate(() => (window as any).__injected)).toBeUndefined();
  expect(await page.evaluate(() => (window as any).__violations)).toContain('script-src-elem');
});

/** Flags without `--addr` and its value: the test picks the address. */
const withoutAddr = (flags: string[]) => flags.filter((_, i) => flags[i] !== '--addr' && flags[i - 1] !== '--addr');

test('behind nginx configured as the deployment guide says, a call goes over https and wss', async ({ open }) => {
  const certificate = makeCertificate('proxy', ['duo-proxy.test']);
  // The guide's site file, with this test's ports, name and certificate.
  let site = readFileSync(path.join(__dirname, '../../deploy/nginx-duo.conf'), 'utf8');
  const replace = (from: string, to: string) => {
    expect(site, `the guide's nginx configuration has ${from}`).toContain(from);
    site = site.replaceAll(from, to);
  };
  replace('listen 443 ssl;', `listen 127.0.0.1:${PROXY_PORT} ssl;`);
  replace('listen [::]:443 ssl;', '');
  replace('/etc/letsencrypt/live/call.example.com/fullchain.pem', certificate.cert);
  replace('/etc/letsencrypt/live/call.example.com/privkey.pem', certificate.key);
  replace('server_name call.example.com;', 'server_name duo-proxy.test;');
  replace('proxy_pass http://127.0.0.1:3000;', `proxy_pass http://127.0.0.1:${BEHIND_PROXY_PORT};`);
  writeFileSync(path.join(dir, 'duo.conf'), site);
  writeFileSync(path.join(dir, 'nginx.conf'), `
    daemon off;
    worker_processes 1;
    pid ${dir}/nginx.pid;
    error_log stderr warn;
    user root;
    events { worker_connections 256; }
    http {
      access_log off;
      client_body_temp_path ${dir}/body;
      proxy_temp_path ${dir}/proxy;
      fastcgi_temp_path ${dir}/fastcgi;
      uwsgi_temp_path ${dir}/uwsgi;
      scgi_temp_path ${dir}/scgi;
      include ${dir}/duo.conf;
    }
  `);
  // The unit's flags, with this test's public origin.
  const unit = readFileSync(path.join(__dirname, '../../deploy/duo.service'), 'utf8');
  const execStart = unit.match(/^ExecStart=\S+ ((?:.*\\\n)*.*)$/m)![1].replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean);
  const flags = execStart.map((arg) => arg.replace('https://call.example.com', `https://duo-proxy.test:${PROXY_PORT}`));
  expect(flags).toContain(`https://duo-proxy.test:${PROXY_PORT}`);
  const server = startServer(BEHIND_PROXY_PORT, ...withoutAddr(flags));
  const nginx = spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr'], { stdio: 'inherit' });
  try {
    await waitUntilServing(server);
    await expect.poll(() => presentedFingerprint(PROXY_PORT, 'duo-proxy.test').catch(() => ''), { timeout: 15_000 })
      .toBe(certificate.fingerprint);
    const headers = await headersOf(`https://127.0.0.1:${PROXY_PORT}/`);
    expect(headers['strict-transport-security']).toBe('max-age=31536000');
    expect(headers['referrer-policy']).toBe('no-referrer');
    const origin = `https://duo-proxy.test:${PROXY_PORT}`;
    const { alice } = await connectedPair(open, origin, origin, acceptCertificate);
    expect(await alice.evaluate(() => window.isSecureContext)).toBe(true);
  } finally {
    nginx.kill('SIGTERM');
    server.kill('SIGKILL');
    await exited(nginx);
  }
});
