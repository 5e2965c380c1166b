import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exited, expect, expectEveryoneVideoPlaying, expectMediaFlowingBothWays, freshRoom, hangUp, smallCamera, start, startServer, status, test, waitUntilServing, type Server } from './helpers';

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

/** Both instances, sharing the Redis; pages of the proxy's origin may signal. */
async function startInstances(): Promise<Server[]> {
  const flags = ['--redis', `redis://127.0.0.1:${REDIS}`, '--trusted-proxy', '127.0.0.1', '--allowed-origin', `http://127.0.0.1:${PROXY}`];
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
