// A performer in Debian's Firefox ESR, for the browser tests (tests/firefox.py drives it).
//
// Playwright's Firefox is a patched build that cannot be installed here, so this drives the
// distribution's firefox-esr with puppeteer-core over WebDriver BiDi (never downloading a
// browser). Firefox's fake devices stand in for camera and microphone: a 640x480 picture and a
// 1 kHz tone, handed out without a permission prompt.
//
//   node performer.mjs INVITE_URL --profile DIR [--firefox PATH] [--every MS]
//
// It opens the invite, accepts the consent, presses join, and then prints the page's state as
// one JSON object per line on stdout, every MS ms (default 250):
//   {"event": "launched", "browser_pid": N, "version": "firefox/..."}   once Firefox runs
//   {"event": "state", "state": "joined", "remote": [...], ...}         what the page shows
//   {"event": "error", "message": "..."}                                 the driver failed
// It closes Firefox and exits when stdin closes or on SIGTERM/SIGINT. Firefox runs in a process
// group of its own (puppeteer starts it detached): the launched line gives its pid, so that the
// caller can kill it too if this process dies first.

import puppeteer from 'puppeteer-core';

/** Firefox preferences for a performer without a person: fake devices, no prompts, loopback ICE. */
const PREFS = {
  // fake camera and microphone, granted without asking
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // ... and counted as granted: Firefox gathers ICE candidates on the default route's
  // interface only (never loopback) for a page without camera or microphone permission, and
  // the prompt-free grant above does not count as one
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  // remote tiles play with sound without a click
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // the tests' server listens on 127.0.0.1 only: gather loopback candidates, as plain
  // addresses (no mDNS names, which would need multicast to resolve)
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // this machine has no internet: keep Firefox from trying
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'app.update.enabled': false,
};

/** The page's state as a test reads it: what the performer sees, and the connections. */
async function pageState() {
  const text = (testid) => {
    const el = document.querySelector(`[data-testid="${testid}"]`);
    return el && !el.hidden ? (el.textContent ?? '').trim() : null;
  };
  const improv = /** @type {any} */ (window).improv;
  const remote = [...document.querySelectorAll('video[data-testid=remote-video]')].map((v) => ({
    performer_id: v.dataset.performerId,
    width: v.videoWidth,
    height: v.videoHeight,
    time: v.currentTime,
    paused: v.paused,
    level: improv?.analyserLevel(v.dataset.performerId) ?? 0,
  }));
  const local = /** @type {HTMLVideoElement | null} */ (document.querySelector('[data-testid=local-video]'));
  const connection = (pc) => (pc ? { connection: pc.connectionState, ice: pc.iceConnectionState } : null);
  /**
   * Codec and counters of a connection's RTP streams of one direction ('outbound-rtp' or
   * 'inbound-rtp'), by kind, summed over the streams of that kind.
   */
  const rtp = async (pc, type) => {
    const out = {};
    if (!pc) return out;
    const stats = await pc.getStats();
    for (const s of stats.values()) {
      if (s.type !== type) continue;
      const seen = out[s.kind] ?? { codec: null, packets: 0, frames: 0, audio_energy: 0 };
      seen.codec = stats.get(s.codecId)?.mimeType ?? seen.codec;
      seen.packets += (type === 'outbound-rtp' ? s.packetsSent : s.packetsReceived) ?? 0;
      seen.frames += (type === 'outbound-rtp' ? s.framesEncoded : s.framesDecoded) ?? 0;
      seen.audio_energy += s.totalAudioEnergy ?? 0;
      out[s.kind] = seen;
    }
    return out;
  };
  let support = null;
  try {
    const module = await import('/static/js/performer/browser_support.js');
    support = module.browserProblems({ studio: true });
  } catch (err) {
    support = [{ code: 'import', message: String(err) }];
  }
  return {
    at: Date.now(),
    state: document.body.dataset.state ?? null,
    status: text('status'),
    error: text('error'),
    browser_problems_shown: text('browser-problems'),
    browser_problems: support,
    performer_id: improv?.performerId ?? null,
    local: local ? {
      width: local.videoWidth, height: local.videoHeight, time: local.currentTime, level: improv?.localLevel() ?? 0,
    } : null,
    remote,
    publish: connection(improv?.pcs?.publish),
    subscribe: connection(improv?.pcs?.subscribe),
    sending: await rtp(improv?.pcs?.publish, 'outbound-rtp'),
    receiving: await rtp(improv?.pcs?.subscribe, 'inbound-rtp'),
    user_agent: navigator.userAgent,
  };
}

/** @param {Record<string, unknown>} line */
function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function parseArgs(argv) {
  const args = { invite: null, profile: null, firefox: '/usr/bin/firefox-esr', every: 250 };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--profile') args.profile = argv[++i];
    else if (arg === '--firefox') args.firefox = argv[++i];
    else if (arg === '--every') args.every = Number(argv[++i]);
    else if (!args.invite) args.invite = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (!args.invite || !args.profile) throw new Error('usage: performer.mjs INVITE_URL --profile DIR [--firefox PATH] [--every MS]');
  return args;
}

/** @type {import('puppeteer-core').Browser | null} */
let browser = null;
let stopping = false;

/** Close Firefox (once) and exit with ``code``. */
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  await browser?.close().catch(() => {});
  process.exit(code);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  process.stdin.on('end', () => stop());
  process.stdin.on('close', () => stop());
  process.stdin.resume();
  process.on('SIGTERM', () => stop());
  process.on('SIGINT', () => stop());

  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: args.firefox,
    headless: true,
    userDataDir: args.profile,
    extraPrefsFirefox: PREFS,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    protocolTimeout: 20000,
  });
  emit({ event: 'launched', browser_pid: browser.process()?.pid ?? null, version: await browser.version() });
  if (stopping) return;

  const page = await browser.newPage();
  // the page's own complaints, for the log the caller keeps (stderr)
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warn') process.stderr.write(`page ${msg.type()}: ${msg.text()}\n`);
  });
  page.on('pageerror', (err) => process.stderr.write(`page error: ${err?.message ?? err}\n`));
  await page.setViewport({ width: 1280, height: 800 });
  await page.goto(args.invite, { waitUntil: 'load' });
  await page.waitForSelector('[data-testid=consent-accept]', { visible: true, timeout: 15000 });
  await page.click('[data-testid=consent-accept]');
  await page.waitForFunction(
    () => !(/** @type {HTMLButtonElement} */ (document.querySelector('[data-testid=join]')).disabled),
    { timeout: 15000, polling: 100 },
  );
  await page.click('[data-testid=join]');

  while (!stopping) {
    emit({ event: 'state', ...(await page.evaluate(pageState)) });
    await new Promise((resolve) => setTimeout(resolve, args.every));
  }
}

main().catch((err) => {
  if (stopping) return; // closing Firefox under a running step fails that step: not an error
  emit({ event: 'error', message: String(err?.stack ?? err) });
  stop(1);
});
