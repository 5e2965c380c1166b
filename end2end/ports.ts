// Where the test servers listen (started by playwright.config.ts).

// The release server built by `cargo leptos build --release`, on its own ports so that a
// `make run` on 3000 does not get in the way.
export const PORT = 3100;
/** A server that hands out TURN credentials for the test coturn and forces relay-only ICE. */
export const RELAY_PORT = 3101;
/** The same, with a secret coturn does not know. */
export const WRONG_SECRET_PORT = 3102;
/** A real TURN server: Debian's coturn, on loopback, with the TURN REST shared secret. */
export const TURN_PORT = 3478;
export const TURN_SECRET = 'duo-test-secret';


/** Flags for a coturn on loopback that takes TURN REST credentials made with `secret`. */
export const turnServerArgs = (port: number, secret: string, firstRelayPort: number) => [
  '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
  '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=duo.test', '--fingerprint',
  // Both browsers are on this machine: let coturn relay between loopback addresses.
  '--allow-loopback-peers', '--no-tls', '--no-dtls', '--no-cli', '--log-file=stdout', '--simple-log',
  `--min-port=${firstRelayPort}`, `--max-port=${firstRelayPort + 100}`,
];
