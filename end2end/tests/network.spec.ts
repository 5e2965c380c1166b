import { type Page } from '@playwright/test';
import { spawn } from 'node:child_process';
import * as people from './people';
import { chromiumPerson } from './people';
import { RELAY_PORT, WRONG_SECRET_PORT, turnServerArgs } from '../ports';
import {
  test, expect, connectedPair, exited, expectMediaFlowing, expectMediaFlowingBothWays, freshRoom, hangUp, inboundBytes, start,
  startServer, status, waitUntilServing,
} from './helpers';

const selectedPair = (page: Page) => people.selectedPair(chromiumPerson(page));

test('relay-only ICE through a real coturn: media flows both ways over relayed candidates', async ({ open }) => {
  const { alice, bob } = await connectedPair(open, `http://127.0.0.1:${RELAY_PORT}`);
  for (const page of [alice, bob]) {
    expect(await selectedPair(page)).toEqual({ local: 'relay', remote: 'relay', protocol: 'udp' });
  }
});

test('with a TURN secret the relay does not accept, the call fails and the page says why', async ({ open }) => {
  const room = freshRoom();
  const alice = await open(`http://127.0.0.1:${WRONG_SECRET_PORT}/call/${room}`);
  const bob = await open(`http://127.0.0.1:${WRONG_SECRET_PORT}/call/${room}`);
  await start(alice);
  await start(bob);
  const refused = 'Could not connect: the relay (TURN) server refused our credentials.';
  await expect(status(alice)).toHaveText(refused, { timeout: 25_000 });
  await expect(status(bob)).toHaveText(refused, { timeout: 25_000 });
  // Nothing hangs: hanging up works as always.
  await hangUp(alice);
  await expect(status(alice)).toHaveText('Call ended. Press Start to call again.');
});

for (const [signal, port] of [['SIGKILL', 3103], ['SIGTERM', 3104]] as const) {
  test(`a call survives its signaling server being stopped (${signal}) and restarted`, async ({ open }) => {
    let server = startServer(port);
    try {
      await waitUntilServing(server);
      const { alice, bob } = await connectedPair(open, `http://127.0.0.1:${port}`);

      server.kill(signal);
      const code = await exited(server);
      if (signal === 'SIGTERM') expect(code, 'a graceful shutdown exits cleanly').toBe(0);
      for (const page of [alice, bob]) {
        await expect(status(page)).toHaveText(/Lost the connection to the server; reconnecting/);
      }
      // Media goes browser to browser, so it keeps flowing while the server is gone.
      for (const page of [alice, bob]) {
        const before = await inboundBytes(page);
        await expect.poll(async () => (await inboundBytes(page)).video).toBeGreaterThan(before.video + 1000);
      }

      server = startServer(port);
      await waitUntilServing(server);
      await expect(status(alice)).toHaveText('Connected.');
      await expect(status(bob)).toHaveText('Connected.');
      await expectMediaFlowingBothWays(alice, bob);

      // And the signaling really works again: hang up, and a new call connects.
      await hangUp(alice);
      await expect(status(bob)).toHaveText(/The other person left/);
      await start(alice);
      await expectMediaFlowingBothWays(alice, bob);
    } finally {
      server.kill('SIGKILL');
    }
  });
}

test('when the media path breaks, the same connection restarts ICE and the call comes back', async ({ open }) => {
  // A relay-only call through a coturn of this test's own, which the test takes away.
  const [turnPort, appPort, secret] = [3479, 3105, 'restart-secret'];
  const startTurn = () => spawn('turnserver', turnServerArgs(turnPort, secret, 49300), { stdio: 'ignore' });
  let turn = startTurn();
  const server = startServer(appPort, '--ice-server', `turn:127.0.0.1:${turnPort}`, '--turn-secret', secret, '--relay-only');
  try {
    await waitUntilServing(server);
    const { alice, bob } = await connectedPair(open, `http://127.0.0.1:${appPort}`);

    turn.kill('SIGKILL');
    await exited(turn);
    for (const page of [alice, bob]) {
      await expect(status(page)).toHaveText('The connection is interrupted; reconnecting…', { timeout: 40_000 });
    }
    turn = startTurn();
    for (const page of [alice, bob]) {
      await expect(status(page)).toHaveText('Connected.', { timeout: 60_000 });
      await expectMediaFlowing(page);
      // The same peer connection came back (an ICE restart), not a new call.
      expect(await page.evaluate(() => (window as any).__peerConnections.length)).toBe(1);
      expect(await selectedPair(page)).toEqual({ local: 'relay', remote: 'relay', protocol: 'udp' });
    }
  } finally {
    server.kill('SIGKILL');
    turn.kill('SIGKILL');
  }
});
