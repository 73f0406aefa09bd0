// @ts-check
/**
 * The pre-join network check. Before the performer joins (no camera needed), a short-lived peer
 * connection to the server with one data channel, over the ICE servers the call will use (TURN
 * included), answers three questions: does media reach the server by UDP directly, only through
 * a TURN relay, or not at all (the selected candidate pair's local candidate); and roughly how
 * fast can this browser send (what the server saw arrive over ~2 s while this page sent, paced
 * at the server's `max_kbps`). Then a verdict,
 * and advice when the call will not work well; joining stays possible whatever it says.
 * Server side: improv_capture/api/network_probe.py; messages `probe` / `probe_answer`
 * (docs/signaling.md, "Network check"). Test surface: `window.improv.networkCheck`.
 */
import { connectionConfig, gatheringDone } from '../common/connection.js';
import { byId, h, hook } from '../common/dom.js';

/** From the server's answer to an open data channel; past it, media cannot reach the server. */
const CONNECT_TIMEOUT_MS = 8000;
/** For the server's `probe_answer` (or its refusal). */
const ANSWER_TIMEOUT_MS = 5000;
/** After sending, for the server's count. */
const RESULT_TIMEOUT_MS = 3000;
/** Data channel messages: small, so that the server sees arrivals often. */
const CHUNK_BYTES = 4 * 1024;
/** Queued bytes the channel may hold while measuring: enough to fill a fast link's pipe. */
const HIGH_WATER_BYTES = 256 * 1024;
/** How often the pacing loop sends what its rate allows. */
const TICK_MS = 20;
/** What the call sends beside the live video's cap: audio, packet headers, RTCP. */
const CALL_OVERHEAD_KBPS = 100;

/** @typedef {'idle' | 'running' | 'done' | 'cancelled'} CheckState */
/** @typedef {'udp' | 'relay' | 'none'} CheckPath */
/** @typedef {'good' | 'poor' | 'blocked' | 'unknown'} Verdict */
/**
 * @typedef {object} CheckResult
 * @property {CheckState} state
 * @property {CheckPath | null} path udp: UDP direct (host, srflx or prflx); relay: TURN; none
 * @property {string | null} label how the page names the path ("UDP direct", "relay over tcp")
 * @property {string | null} candidateType the selected pair's local candidate type
 * @property {string | null} relayProtocol udp, tcp or tls: how the browser reaches TURN
 * @property {number | null} uplinkKbps what the server counted arriving, kbit/s
 * @property {boolean} capped the server stopped counting at its limit: the uplink is faster
 * @property {number | null} needKbps what the live call sends at most
 * @property {Verdict | null} verdict
 * @property {string} message
 * @property {string[]} advice
 */

const ADVICE = {
  slow: [
    'Use a wired (Ethernet) connection, or sit close to your Wi-Fi router.',
    'Close other apps and browser tabs that use the network: video calls, streaming, cloud backups, downloads.',
    'Ask others on your network to pause streaming and large downloads during the session.',
  ],
  blocked: [
    'Turn off a VPN if you use one, or try another network (home Wi-Fi rather than a work or school network, or a phone hotspot).',
    'A firewall may block the call: tell the organiser, who can set up a relay (TURN) server.',
  ],
};

/** @param {number} kbps */
function rate(kbps) {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The selected candidate pair's local candidate, from the connection's stats.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<{candidateType: string | null, relayProtocol: string | null}>}
 */
async function selectedLocalCandidate(pc) {
  const stats = await pc.getStats();
  /** @type {string | null} */
  let pairId = null;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  if (!pairId) { // Firefox marks the pair itself
    stats.forEach((s) => { if (!pairId && s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pairId = s.id; });
  }
  const pair = pairId ? stats.get(pairId) : null;
  const local = pair ? stats.get(pair.localCandidateId) : null;
  return { candidateType: local?.candidateType ?? null, relayProtocol: local?.relayProtocol ?? null };
}

/** @returns {CheckResult} */
function idle() {
  return {
    state: 'idle', path: null, label: null, candidateType: null, relayProtocol: null,
    uplinkKbps: null, capped: false, needKbps: null, verdict: null, message: '', advice: [],
  };
}

export class NetworkCheck {
  /**
   * @param {object} opts
   * @param {(msg: {type: string, [key: string]: any}) => boolean} opts.send
   * @param {() => RTCIceServer[]} opts.iceServers
   * @param {() => number | null} opts.videoBitrate the live video's cap, bit/s (welcome.media)
   */
  constructor({ send, iceServers, videoBitrate }) {
    this.send = send;
    this.iceServers = iceServers;
    this.videoBitrate = videoBitrate;
    /** @type {CheckResult} */
    this.result = idle();
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {((msg: any) => void) | null} the pending `probe` waits for this */
    this.reply = null;
    this.run = 0;
    this.view = {
      box: hook('network-check'),
      summary: byId('netcheck-summary'),
      advice: hook('network-advice'),
      again: /** @type {HTMLButtonElement} */ (hook('network-check-again')),
    };
    this.view.again.addEventListener('click', () => this.start());
  }

  /** Run the check (again); a running one is abandoned. */
  start() {
    const run = ++this.run;
    this.close();
    const video = this.videoBitrate();
    const needKbps = video ? Math.round(video / 1000) + CALL_OVERHEAD_KBPS : null;
    this.result = { ...idle(), state: 'running', needKbps, message: 'Checking your connection to the server…' };
    this.render();
    this.check(run).catch((err) => {
      if (run === this.run) this.finish({ verdict: 'unknown', message: `The network check failed: ${err?.message ?? err}` });
    });
  }

  /** The performer joined (or the page failed): a running check would compete with the call. */
  cancel() {
    if (this.result.state !== 'running') return;
    this.run++;
    this.close();
    this.result = { ...this.result, state: 'cancelled', message: 'Network check stopped.' };
    this.render();
  }

  /** @param {any} msg a `probe_answer` */
  onAnswer(msg) {
    this.reply?.(msg);
  }

  /**
   * An `error` from the server; true when it was about a probe.
   * @param {any} msg
   */
  onError(msg) {
    if (typeof msg.code !== 'string' || !msg.code.startsWith('probe_')) return false;
    this.reply?.(msg);
    return true;
  }

  /** @param {number} run */
  async check(run) {
    const current = () => run === this.run;
    const pc = new RTCPeerConnection(connectionConfig(this.iceServers()));
    this.pc = pc;
    const channel = pc.createDataChannel('probe', { ordered: true });
    channel.binaryType = 'arraybuffer';
    const opened = new Promise((resolve) => {
      channel.addEventListener('open', () => resolve(true), { once: true });
      pc.addEventListener('connectionstatechange', () => { if (pc.connectionState === 'failed') resolve(false); });
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    if (!current()) return;
    const answer = await this.ask(/** @type {RTCSessionDescription} */ (pc.localDescription).sdp);
    if (!current()) return;
    if (answer?.type !== 'probe_answer') {
      const why = answer?.message ?? 'the server did not answer';
      this.finish({ verdict: 'unknown', message: `The network check could not run (${why}). You can still join.` });
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const open = await Promise.race([opened, sleep(CONNECT_TIMEOUT_MS).then(() => false)]);
    if (!current()) return;
    if (!open) {
      this.finish({
        path: 'none', label: 'cannot connect', verdict: 'blocked',
        message: 'Cannot connect: your browser could not reach the server\'s media connection, so the call will probably not work from this network. You can still try to join.',
        advice: ADVICE.blocked,
      });
      return;
    }
    const local = await selectedLocalCandidate(pc);
    const relayed = local.candidateType === 'relay';
    const label = relayed ? `relay over ${local.relayProtocol ?? 'udp'}` : 'UDP direct';
    this.result = { ...this.result, ...local, path: relayed ? 'relay' : 'udp', label,
      message: `Connected (${label}); measuring your upload speed…` };
    this.render();
    const count = await this.measure(channel, answer, current);
    if (!current()) return;
    this.close();
    this.finish(this.verdict(label, relayed, count));
  }

  /**
   * Send `probe` and wait for its answer or refusal.
   * @param {string} sdp
   * @returns {Promise<any>} the message, or null after ANSWER_TIMEOUT_MS
   */
  ask(sdp) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(null), ANSWER_TIMEOUT_MS);
      /** @param {any} msg */
      const done = (msg) => { clearTimeout(timer); this.reply = null; resolve(msg); };
      this.reply = done;
      if (!this.send({ type: 'probe', sdp })) done({ type: 'error', message: 'not connected to the server' });
    });
  }

  /**
   * Send at `max_kbps` (or as fast as the channel takes, if slower), for the server's window
   * or up to its byte limit; the server's count of what arrived, or null.
   * @param {RTCDataChannel} channel
   * @param {{window_s: number, max_kbps: number, max_bytes: number}} limits
   * @param {() => boolean} current
   * @returns {Promise<{bytes: number, seconds: number, kbps: number | null, capped: boolean} | null>}
   */
  async measure(channel, limits, current) {
    /** @type {any} */
    let count = null;
    const counted = new Promise((resolve) => {
      channel.addEventListener('message', (ev) => {
        try {
          count = JSON.parse(String(ev.data));
        } catch {
          return;
        }
        resolve(count);
      });
    });
    const chunk = new Uint8Array(CHUNK_BYTES);
    const start = performance.now();
    const until = start + limits.window_s * 1000;
    const bytesPerMs = limits.max_kbps / 8;
    let sent = 0;
    while (current() && !count && channel.readyState === 'open' && performance.now() < until && sent < limits.max_bytes) {
      const allowed = Math.min((performance.now() - start + TICK_MS) * bytesPerMs, limits.max_bytes);
      while (sent < allowed && channel.bufferedAmount < HIGH_WATER_BYTES) {
        channel.send(chunk);
        sent += CHUNK_BYTES;
      }
      await sleep(TICK_MS);
    }
    if (!count && channel.readyState === 'open') channel.send('end');
    return Promise.race([counted, sleep(RESULT_TIMEOUT_MS).then(() => count)]);
  }

  /**
   * @param {string} label
   * @param {boolean} relayed
   * @param {{kbps: number | null, capped: boolean} | null} count
   * @returns {Partial<CheckResult>}
   */
  verdict(label, relayed, count) {
    const kbps = count?.kbps ?? null;
    const need = this.result.needKbps;
    const measured = { uplinkKbps: kbps, capped: !!count?.capped };
    const relay = relayed ? ' Your network blocks direct UDP, so the call goes through a relay server: expect a little more delay.' : '';
    if (kbps == null) {
      return { ...measured, verdict: 'unknown', message: `Connected (${label}), but the upload speed could not be measured.${relay}` };
    }
    const speed = `upload ${count?.capped ? 'more than' : 'about'} ${rate(kbps)}`;
    if (need != null && kbps < need) {
      return {
        ...measured, verdict: 'poor', advice: ADVICE.slow,
        message: `Your connection will not work well: ${label}, ${speed}, but the call needs about ${rate(need)}. Your video may freeze or look blocky. You can still join.${relay}`,
      };
    }
    return { ...measured, verdict: 'good', message: `Your connection looks good: ${label}, ${speed}.${relay}` };
  }

  /** @param {Partial<CheckResult>} outcome */
  finish(outcome) {
    this.close();
    this.result = { ...this.result, advice: [], ...outcome, state: 'done' };
    this.render();
  }

  close() {
    this.reply?.(null);
    this.pc?.close();
    this.pc = null;
  }

  render() {
    const { box, summary, advice, again } = this.view;
    const r = this.result;
    box.hidden = r.state === 'idle';
    box.dataset.state = r.state;
    box.dataset.verdict = r.verdict ?? '';
    box.dataset.path = r.path ?? '';
    summary.textContent = r.message;
    advice.replaceChildren(...r.advice.map((line) => h('li', {}, line)));
    advice.hidden = r.advice.length === 0;
    again.hidden = r.state === 'running';
  }
}
