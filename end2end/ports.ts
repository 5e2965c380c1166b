import os from 'node:os';
import path from 'node:path';

// Where the test servers listen (started by playwright.config.ts).

// The release server built by `cargo leptos build --release --precompress`, on its own ports so that a
// `make run` on 3000 does not get in the way.
export const PORT = 3100;
/** A server that hands out TURN credentials for the test coturn and forces relay-only ICE. */
export const RELAY_PORT = 3101;
/** The same, with a secret coturn does not know. */
export const WRONG_SECRET_PORT = 3102;
/** A real TURN server: Debian's coturn, on loopback, with the TURN REST shared secret. */
export const TURN_PORT = 3478;
export const TURN_SECRET = 'duo-test-secret';
/**
 * Host names the browsers resolve to 127.0.0.1 (`--host-resolver-rules`): a page opened by one
 * of them is what a person on another machine sees, not `localhost`, so the browser treats
 * plain http:// as insecure, exactly as it would across a LAN.
 */
export const LAN_HOSTS = ['duo-lan.test', 'alice-laptop.test', 'bob-phone.test', 'duo-proxy.test'];
/** Servers the HTTPS tests start themselves. */
export const TLS_PORT = 3106;
export const SELF_SIGNED_PORT = 3107;
/** nginx in front of a plain server (deploy/nginx-duo.conf), and the server behind it. */
export const PROXY_PORT = 3443;
export const BEHIND_PROXY_PORT = 3108;


/**
 * Flags for a coturn on loopback that takes TURN REST credentials made with `secret`: the
 * deployment guide's own configuration (deploy/turnserver.conf), with the test's ports and
 * secret, and loopback peers allowed, since both browsers are on this machine.
 */
export const turnServerArgs = (port: number, secret: string, firstRelayPort: number) => [
  '-c', path.join(__dirname, '../deploy/turnserver.conf'),
  '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
  `--static-auth-secret=${secret}`, '--realm=duo.test', '--allow-loopback-peers', '--no-cli',
  `--min-port=${firstRelayPort}`, `--max-port=${firstRelayPort + 100}`,
  `--pidfile=${path.join(os.tmpdir(), `duo-turn-${port}.pid`)}`,
];
