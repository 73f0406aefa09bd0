// @ts-check
/**
 * How fast the high-quality upload may go while the take runs: what the live call leaves free,
 * measured on the publish connection once a second. The browser's congestion controller says
 * how much it could send (the selected candidate pair's availableOutgoingBitrate); the call
 * sends what its outbound RTP streams count. The upload gets 80 % of the difference, never less
 * than MIN_BUDGET_BPS (a link the call fills must still drain the copy slowly).
 */

export const MIN_BUDGET_BPS = 250_000;
/** Share of the measured headroom the upload may take. */
const HEADROOM_SHARE = 0.8;
const SAMPLE_MS = 1000;

/**
 * The selected candidate pair's estimate of the bitrate the connection could send, if known.
 * @param {RTCStatsReport} stats
 * @returns {number | null}
 */
function availableOutgoing(stats) {
  /** @type {any} */
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId) ?? pair;
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  const v = pair?.availableOutgoingBitrate;
  return typeof v === 'number' && v > 0 ? v : null;
}

/**
 * Bytes the call's outbound RTP streams sent so far, headers included.
 * @param {RTCStatsReport} stats
 * @returns {number}
 */
function outboundBytes(stats) {
  let total = 0;
  stats.forEach((s) => {
    if (s.type === 'outbound-rtp') total += (s.bytesSent ?? 0) + (s.headerBytesSent ?? 0);
  });
  return total;
}

export class CallBudget {
  /**
   * @param {() => RTCPeerConnection | null} pc the publish connection, when there is one
   */
  constructor(pc) {
    this.pc = pc;
    /** Current budget in bit/s (MIN_BUDGET_BPS until measured). */
    this.bps = MIN_BUDGET_BPS;
    /** @type {{available: number | null, outbound: number | null}} the last measurement */
    this.measured = { available: null, outbound: null };
    /** @type {{pc: RTCPeerConnection, bytes: number, at: number} | null} */
    this.last = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
  }

  /** Measure once a second until `stop`. */
  start() {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => { this.sample().catch(() => {}); }, SAMPLE_MS);
    this.sample().catch(() => {});
  }

  stop() {
    clearInterval(this.timer);
    this.timer = undefined;
    this.last = null;
  }

  async sample() {
    const pc = this.pc();
    if (!pc || pc.connectionState === 'closed') {
      this.last = null;
      this.bps = MIN_BUDGET_BPS;
      return;
    }
    const stats = await pc.getStats();
    const now = performance.now();
    const bytes = outboundBytes(stats);
    const available = availableOutgoing(stats);
    let outbound = null;
    if (this.last && this.last.pc === pc && now > this.last.at) {
      outbound = Math.max(0, (bytes - this.last.bytes) * 8000 / (now - this.last.at));
    }
    this.last = { pc, bytes, at: now };
    this.measured = { available, outbound };
    if (available === null || outbound === null) {
      this.bps = MIN_BUDGET_BPS;
      return;
    }
    this.bps = Math.max(MIN_BUDGET_BPS, HEADROOM_SHARE * (available - outbound));
  }
}
