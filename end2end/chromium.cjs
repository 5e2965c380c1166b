// Debian's Chromium as the tests and the benchmarks launch it: one list of flags, so the two
// cannot drift apart. CommonJS, so both the TypeScript tests and the .mjs benchmarks import it.

/** The browser binary (`CHROMIUM` overrides it). */
exports.executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Features every run turns off; `chromiumArgs` merges more in (Chromium reads only the last
 * `--disable-features` flag it is given). */
const disabledFeatures = [
  // Chromium 156 loads its omnibox popup as two WebUI pages in every new window (each browser
  // context is one), and they keep a core busy for a second or more: on a 2-core machine that
  // halves what the call under test gets (seen in a trace of call setup).
  'WebUIOmniboxPopup', 'WebUIOmniboxAimPopup', 'WebUIOmniboxFullPopup', 'PreloadTopChromeWebUI',
];

/**
 * Headless Chromium kept off the closed network, plus `extra` flags; `features` are more
 * features to disable.
 */
exports.chromiumArgs = ({ extra = [], features = [] } = {}) => [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  `--disable-features=${[...disabledFeatures, ...features].join(',')}`,
  ...extra,
];
