import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exited, expect, expectEveryoneVideoPlaying, expectMediaFlowingBothWays, frameGaps, freshRoom, hangUp, lastFrames, openConnections, recordFrameGaps, smallCamera, start, startServer, status, test, waitUntilServing, type Server } from './helpers';

// Two instances sharing rooms through a real Redis (Debian's redis-server), and Debian's
// HAProxy in front of them running deploy/haproxy-duo.cfg: the calls of docs/deploy.md,
// "Several instances", in real browsers.
const REDIS = 3420;
const INSTANCES = [3421, 3422];
const PROXY = 3423;

test.describe.configure({ mode: 'serial' });

function startRedis(): ChildProcess {
  return spawn('redis-server', ['--port', `${REDIS}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
}

/** HAProxy running the shipped configuration, with this test's ports. */
function startHaproxy(): ChildProcess {
  const shipped = readFileSync(path.join(__dirname, '../../deploy/haproxy-duo.cfg'), 'utf8');
  const lines = shipped.split('\n').flatMap((line) => {
    const word = line.trim().split(' ')[0];
    if (word === 'bind') return [`    bind 127.0.0.1:${PROXY}`];
    return word === 'server' ? [] : [line];
  });
  lines.push(...INSTANCES.map((port, n) => `    server duo${n} 127.0.0.1:${port}`));
  const dir = mkdtempSync(path.join(tmpdir(), 'duo-haproxy-'));
  writeFileSync(path.join(dir, 'haproxy.cfg'), lines.join('\n') + '\n');
  return spawn('haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')], { stdio: 'ignore' });
}

/** Both instances, sharing the Redis, with `extra` flags; pages of the proxy's origin may signal. */
async function startInstances(...extra: string[]): Promise<Server[]> {
  const flags = ['--redis', `redis://127.0.0.1:${REDIS}`, '--trusted-proxy', '127.0.0.1', '--allowed-origin', `http://127.0.0.1:${PROXY}`, ...extra];
  const servers = INSTANCES.map((port) => startServer(port, ...flags));
  for (const server of servers) await waitUntilServing(server);
  for (const port of INSTANCES) await expect.poll(() => ready(port), { timeout: 15_000 }).toBe(200);
  return servers;
}

const ready = (port: number) => fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);

const joins = (server: Server) => server.log.filter((line) => line.includes(' joined ')).length;

test('a call holds with each page signaling through a different instance', async ({ open }) => {
  test.setTimeout(90_000);
  const redis = startRedis();
  let servers: Server[] = [];
  try {
    servers = await startInstances();
    const room = freshRoom();
    const alice = await open(`http://127.0.0.1:${INSTANCES[0]}/call/${room}`);
    const bob = await open(`http://127.0.0.1:${INSTANCES[1]}/call/${room}`);
    await start(alice);
    await expect(status(alice)).toHaveText(/Waiting/);
    await start(bob);
    await expectMediaFlowingBothWays(alice, bob);
    expect(servers.map(joins)).toEqual([1, 1]);
    await hangUp(bob);
    await expect(status(alice)).toHaveText(/The other person left/);
  } finally {
    for (const child of [...servers, redis]) child.kill('SIGKILL');
  }
});

test('through HAProxy, a call survives the instance its signaling was on being SIGKILLed', async ({ open }) => {
  test.setTimeout(120_000);
  const redis = startRedis();
  let servers: Server[] = [];
  let proxy: ChildProcess | undefined;
  try {
    servers = await startInstances();
    proxy = startHaproxy();
    await expect.poll(() => ready(PROXY), { timeout: 15_000 }).toBe(200);
    const url = `http://127.0.0.1:${PROXY}/call/${freshRoom()}`;
    const alice = await open(url);
    const bob = await open(url);
    await start(alice);
    await start(bob);
    await expectMediaFlowingBothWays(alice, bob);
    // Round robin spread everything the pages asked for: kill an instance that holds at least
    // one of the two sockets.
    const counts = servers.map(joins);
    expect(counts[0] + counts[1]).toBe(2);
    const victim = counts[1] > 0 ? 1 : 0;
    servers[victim].kill('SIGKILL');
    await exited(servers[victim]);
    // The pages reconnect through HAProxy to the survivor; media flowed on meanwhile.
    for (const page of [alice, bob]) await expect(status(page)).toHaveText(/^Connected\.$/, { timeout: 20_000 });
    await expectMediaFlowingBothWays(alice, bob);
    expect(joins(servers[1 - victim])).toBeGreaterThan(counts[1 - victim]);
    // And the room works: a hang-up reaches the other.
    await hangUp(bob);
    await expect(status(alice)).toHaveText(/The other person left/);
  } finally {
    for (const child of [...servers, redis, ...(proxy ? [proxy] : [])]) child.kill('SIGKILL');
  }
});

test('Redis restarted mid-call: video plays on meanwhile, and afterwards a third person joins and sees both', async ({ open }) => {
  test.setTimeout(120_000);
  let redis = startRedis();
  let servers: Server[] = [];
  try {
    servers = await startInstances();
    const room = freshRoom();
    const alice = await open(`http://127.0.0.1:${INSTANCES[0]}/call/${room}`, smallCamera);
    const bob = await open(`http://127.0.0.1:${INSTANCES[1]}/call/${room}`, smallCamera);
    await start(alice);
    await start(bob);
    for (const page of [alice, bob]) await expectEveryoneVideoPlaying(page, 1);

    redis.kill('SIGKILL');
    await exited(redis);
    for (const port of INSTANCES) await expect.poll(() => ready(port), { timeout: 10_000 }).toBe(503);
    // The signaling sockets stay up and the media goes browser to browser: nothing changes.
    for (const page of [alice, bob]) {
      await expectEveryoneVideoPlaying(page, 1);
      await expect(status(page)).toHaveText('Connected.');
    }

    redis = startRedis();
    for (const port of INSTANCES) await expect.poll(() => ready(port), { timeout: 15_000 }).toBe(200);
    const carol = await open(`http://127.0.0.1:${INSTANCES[0]}/call/${room}`, smallCamera);
    await start(carol);
    for (const page of [alice, bob, carol]) {
      await expect(status(page)).toHaveText(/^Connected with Guest \d and Guest \d\.$/, { timeout: 20_000 });
      await expectEveryoneVideoPlaying(page, 2);
    }
  } finally {
    for (const child of [...servers, redis]) child.kill('SIGKILL');
  }
});

test('media through the server: the instance carrying it SIGKILLed, every page plays everyone again within 10 s, without a reload', async ({ open }) => {
  test.setTimeout(150_000);
  const redis = startRedis();
  let servers: Server[] = [];
  let proxy: ChildProcess | undefined;
  const carries = (server: Server) => server.log.some((line) => line.includes('carries the media of this room'));
  try {
    servers = await startInstances('--media', 'sfu');
    proxy = startHaproxy();
    await expect.poll(() => ready(PROXY), { timeout: 15_000 }).toBe(200);
    // Alice comes through the proxy, first: the instance she lands on carries the room's media.
    const room = freshRoom();
    const alice = await open(`http://127.0.0.1:${PROXY}/call/${room}`, smallCamera);
    await start(alice);
    await expect.poll(() => servers.map(joins).join()).toMatch(/^(1,0|0,1)$/);
    const owner = joins(servers[0]) === 1 ? 0 : 1;
    await expect.poll(() => carries(servers[owner])).toBe(true);
    // Bob and Carol signal through the other instance; their media goes to the owner too.
    const elsewhere = `http://127.0.0.1:${INSTANCES[1 - owner]}/call/${room}`;
    const bob = await open(elsewhere, smallCamera);
    const carol = await open(elsewhere, smallCamera);
    await start(bob);
    await start(carol);
    const people = [alice, bob, carol];
    for (const page of people) await expectEveryoneVideoPlaying(page, 2);
    expect(carries(servers[1 - owner])).toBe(false);
    for (const page of people) {
      await page.evaluate(() => { (window as any).__noReload = true; });
      await recordFrameGaps(page);
    }

    servers[owner].kill('SIGKILL');
    await exited(servers[owner]);
    const killed = Date.now();
    // Every tile shows frames again (Alice's page through the proxy to the survivor, the
    // others on it already), one connection each, to the survivor, which now carries the room.
    for (const page of people) {
      await expect.poll(async () => {
        const seen = Object.values(await lastFrames(page));
        return seen.length === 2 && seen.every((at) => at > killed + 1_000);
      }, { timeout: 20_000, message: 'every tile plays again' }).toBe(true);
    }
    console.log(`media back on every page ${Date.now() - killed} ms after the owner was killed`);
    for (const page of people) {
      const gaps = await frameGaps(page);
      console.log(`longest wait for a frame, ms: ${JSON.stringify(gaps)}`);
      for (const [tile, gap] of Object.entries(gaps)) expect(gap, `${tile}: no frame for ${gap} ms`).toBeLessThan(10_000);
      expect(await page.evaluate(() => (window as any).__noReload), 'the page was not reloaded').toBe(true);
      await expect(status(page)).toHaveText(/^Connected with .* Media goes through the server\.$/);
      expect(await openConnections(page)).toBe(1);
    }
    expect(carries(servers[1 - owner])).toBe(true);
  } finally {
    for (const child of [...servers, redis, ...(proxy ? [proxy] : [])]) child.kill('SIGKILL');
  }
});
