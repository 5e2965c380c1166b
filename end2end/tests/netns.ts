// Real networks between browsers, made of Linux network namespaces (needs root, iproute2 and
// nftables): an "internet" where servers run, and sites, each a home network behind its own
// NAT. Browsers run inside a site (`browserIn`), so their traffic really crosses the NATs.
// Nothing is connected to this machine's own interfaces, and everything a network made is
// removed by `remove()`, or by the next `NatNetwork.create` of the same name after a crash.
//
//   internet (bridge, 203.0.113.1/24)
//     ├─ wan 203.0.113.10 [NAT of site 0] lan 192.168.1.1 ── 192.168.1.2 [site 0]
//     └─ wan 203.0.113.11 [NAT of site 1] lan 192.168.2.1 ── 192.168.2.2 [site 1]
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from '@playwright/test';
import puppeteer, { type Browser as Puppeteer } from 'puppeteer-core';
import { chromiumArgs, executablePath } from '../chromium.cjs';

/** Every namespace a test makes starts with this, so that leftovers are easy to tell. */
const PREFIX = 'duo-t-';

/** Where servers in the internet namespace listen. */
export const INTERNET_ADDRESS = '203.0.113.1';

/**
 * How a NAT maps a site's outgoing flows: `symmetric` gives every destination a new random
 * port (as carrier-grade and many corporate NATs do), so the address a STUN server sees is
 * of no use to anyone else; `endpoint-independent` keeps the port (as most home routers do),
 * so it is.
 */
export type NatKind = 'symmetric' | 'endpoint-independent';

export interface Site {
  /** The namespace a browser of this site runs in. */
  namespace: string;
  nat: string;
  address: string;
  /** The NAT's address on the internet. */
  publicAddress: string;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** Ends every process in `namespace`, and removes it. */
function removeNamespace(namespace: string) {
  const pids = execFileSync('ip', ['netns', 'pids', namespace]).toString().split('\n').filter(Boolean);
  for (const pid of pids) {
    try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
  }
  ip('netns', 'delete', namespace);
}

export class NatNetwork {
  readonly internet: string;
  readonly sites: Site[];
  private readonly children: ChildProcess[] = [];
  private readonly files: string[] = [];
  private readonly servers: net.Server[] = [];

  private constructor(readonly name: string, sites: number) {
    this.internet = `${PREFIX}${name}-inet`;
    this.sites = Array.from({ length: sites }, (_, i) => ({
      namespace: `${PREFIX}${name}-site${i}`,
      nat: `${PREFIX}${name}-nat${i}`,
      address: `192.168.${i + 1}.2`,
      publicAddress: `203.0.113.${10 + i}`,
    }));
  }

  /** The namespaces of `name`'s network, including what a crashed run left. */
  private static leftovers(name: string): string[] {
    return execFileSync('ip', ['netns', 'list']).toString().split('\n')
      .map((line) => line.split(' ')[0])
      .filter((namespace) => namespace.startsWith(`${PREFIX}${name}-`));
  }

  /** An internet with `sites` sites behind NATs of `kind`. */
  static create(name: string, sites: number, kind: NatKind): NatNetwork {
    for (const namespace of NatNetwork.leftovers(name)) removeNamespace(namespace);
    const network = new NatNetwork(name, sites);
    try {
      network.build(kind);
    } catch (error) {
      network.remove();
      throw error;
    }
    return network;
  }

  private build(kind: NatKind) {
    const inet = this.internet;
    for (const namespace of [inet, ...this.sites.flatMap((site) => [site.nat, site.namespace])]) {
      ip('netns', 'add', namespace);
      // IPv4 only: a new link's IPv6 address, configured a moment after it comes up, is a
      // network change to a browser started meanwhile (its page load fails with
      // ERR_NETWORK_CHANGED).
      execFileSync('ip', ['netns', 'exec', namespace, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      ip('-n', namespace, 'link', 'set', 'lo', 'up');
    }
    ip('-n', inet, 'link', 'add', 'internet', 'type', 'bridge');
    ip('-n', inet, 'link', 'set', 'internet', 'up');
    ip('-n', inet, 'addr', 'add', `${INTERNET_ADDRESS}/24`, 'dev', 'internet');
    this.sites.forEach((site, i) => {
      // Each end of a pair is made inside its namespace: nothing appears in this machine's own.
      ip('link', 'add', 'wan', 'netns', site.nat, 'type', 'veth', 'peer', 'name', `site${i}`, 'netns', inet);
      ip('-n', inet, 'link', 'set', `site${i}`, 'master', 'internet', 'up');
      ip('-n', site.nat, 'addr', 'add', `${site.publicAddress}/24`, 'dev', 'wan');
      ip('-n', site.nat, 'link', 'set', 'wan', 'up');
      ip('-n', site.nat, 'route', 'add', 'default', 'via', INTERNET_ADDRESS);
      ip('link', 'add', 'lan', 'netns', site.nat, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', site.namespace);
      ip('-n', site.nat, 'addr', 'add', `192.168.${i + 1}.1/24`, 'dev', 'lan');
      ip('-n', site.nat, 'link', 'set', 'lan', 'up');
      ip('-n', site.namespace, 'addr', 'add', `${site.address}/24`, 'dev', 'eth0');
      ip('-n', site.namespace, 'link', 'set', 'eth0', 'up');
      ip('-n', site.namespace, 'route', 'add', 'default', 'via', `192.168.${i + 1}.1`);
      execFileSync('ip', ['netns', 'exec', site.nat, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    });
    this.setNat(kind);
  }

  /**
   * Makes every NAT map flows the `kind` way from now on (flows already mapped keep their
   * mapping). Linux keeps a flow's source port where it can, unless told `fully-random`.
   * Either way a NAT lets in only what answers a flow from its site, as home routers do.
   * Dropping the rest before conntrack keeps it (priority mangle, after conntrack's -200 but
   * before the entry is confirmed) matters: a kept entry for a stranger's packet would take
   * the port that the site's own flow to that stranger needs, and Linux would map that flow
   * to another port.
   */
  setNat(kind: NatKind) {
    const masquerade = kind === 'symmetric' ? 'masquerade fully-random' : 'masquerade';
    const rules = `flush ruleset
table ip nat {
  chain prerouting {
    type filter hook prerouting priority mangle;
    iifname "wan" ct state new drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "wan" ${masquerade}
  }
}
`;
    for (const site of this.sites) {
      execFileSync('ip', ['netns', 'exec', site.nat, 'nft', '-f', '-'], { input: rules });
    }
  }

  /**
   * Makes `site`'s router drop every UDP packet its network sends out (counted), as networks
   * that allow only web traffic do, until the next `setNat`.
   */
  blockUdp(site: Site) {
    const rules = `table inet firewall {
  chain forward {
    type filter hook forward priority filter;
    iifname "lan" meta l4proto udp counter drop
  }
}
`;
    execFileSync('ip', ['netns', 'exec', site.nat, 'nft', '-f', '-'], { input: rules });
  }

  /** How many UDP packets `blockUdp` dropped at `site`'s router. */
  droppedUdp(site: Site): number {
    const rules = execFileSync('ip', ['netns', 'exec', site.nat, 'nft', 'list', 'table', 'inet', 'firewall']).toString();
    return Number(/counter packets (\d+)/.exec(rules)?.[1] ?? NaN);
  }

  /** Starts `command` inside `namespace`; `remove()` ends it. */
  spawn(namespace: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], options);
    this.children.push(child);
    return child;
  }

  /** Whether something in `namespace` listens on UDP `address:port`. */
  listensOnUdp(namespace: string, address: string, port: number): boolean {
    const sockets = execFileSync('ip', ['netns', 'exec', namespace, 'ss', '-Hlun']).toString();
    return sockets.includes(` ${address}:${port} `);
  }

  /** A path for a file of the network's (a pid file, say), which `remove()` deletes. */
  file(name: string): string {
    const file = path.join(os.tmpdir(), `${PREFIX}${this.name}-${name}`);
    this.files.push(file);
    return file;
  }

  /**
   * A script that runs `browser` inside `site`, for Playwright's `executablePath`: Playwright
   * talks to the browser over a pipe, so the test needs no network to the site.
   */
  browserIn(site: Site, browser: string): string {
    const script = this.file(`browser-in-site${this.sites.indexOf(site)}.sh`);
    writeFileSync(script, `#!/bin/sh\nexec ip netns exec ${site.namespace} ${browser} "$@"\n`);
    chmodSync(script, 0o755);
    return script;
  }

  /** Chromium inside `site`, with a fake camera and microphone that need no permission. */
  chromiumIn(site: Site): Promise<Browser> {
    return chromium.launch({
      executablePath: this.browserIn(site, executablePath),
      args: chromiumArgs({
        extra: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'],
        features: ['LocalNetworkAccessChecks'],
      }),
    });
  }

  /**
   * Firefox ESR inside `site`, driven over WebDriver BiDi. Its remote agent listens on the
   * site's own loopback, which this machine's cannot reach, so the connection goes through a
   * Unix socket (a file both see): a relay inside the site passes its bytes on to Firefox, and
   * one in this process takes the test's connection to it. `prefs` go in Firefox's profile.
   */
  async firefoxIn(site: Site, prefs: Record<string, unknown>): Promise<Puppeteer> {
    const tag = `firefox-in-site${this.sites.indexOf(site)}`;
    const profile = mkdtempSync(path.join(os.tmpdir(), `${PREFIX}${this.name}-${tag}-`));
    this.files.push(profile);
    writeFileSync(path.join(profile, 'user.js'),
      Object.entries(prefs).map(([name, value]) => `user_pref(${JSON.stringify(name)}, ${JSON.stringify(value)});\n`).join(''));
    const socket = this.file(`${tag}.sock`);
    rmSync(socket, { force: true });
    const local = net.createServer((client) => {
      const inside = net.connect(socket);
      client.pipe(inside).pipe(client);
      client.on('error', () => inside.destroy());
      inside.on('error', () => client.destroy());
    });
    this.servers.push(local);
    await new Promise<void>((resolve) => local.listen(0, '127.0.0.1', resolve));
    // The agent takes only connections that name its own port (in `Host`): the same number
    // inside the site as here.
    const { port } = local.address() as net.AddressInfo;
    this.spawn(site.namespace, process.env.FIREFOX ?? '/usr/bin/firefox-esr',
      ['--headless', '--no-remote', '--profile', profile, `--remote-debugging-port=${port}`, 'about:blank'],
      { stdio: 'ignore' });
    const relay = `require('net').createServer((c) => { const f = require('net').connect(${port}, '127.0.0.1');
      c.pipe(f).pipe(c); c.on('error', () => f.destroy()); f.on('error', () => c.destroy()); }).listen(${JSON.stringify(socket)});`;
    this.spawn(site.namespace, process.execPath, ['-e', relay], { stdio: 'ignore' });
    // Firefox takes a few seconds to start its agent.
    for (let tries = 0; ; tries++) {
      try {
        return await puppeteer.connect({
          browserWSEndpoint: `ws://127.0.0.1:${port}/session`, protocol: 'webDriverBiDi', acceptInsecureCerts: true,
        });
      } catch (error) {
        if (tries >= 100) throw new Error(`Firefox in ${site.namespace} did not answer: ${error}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /** Ends every process in the network and removes it. */
  remove() {
    for (const server of this.servers) server.close();
    for (const child of this.children) child.kill('SIGKILL');
    for (const namespace of NatNetwork.leftovers(this.name)) removeNamespace(namespace);
    for (const file of this.files) rmSync(file, { force: true, recursive: true });
  }
}
