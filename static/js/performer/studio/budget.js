// @ts-check
/**
 * How fast the high-quality upload may go while the take runs: what the live call leaves
 * free, found by watching the call. A browser cannot see a link's capacity while the call
 * does not fill it (its congestion controller's estimate follows what the call sends), so the
 * budget probes: it grows while the call stays healthy and halves as soon as the call shows
 * the upload queuing ahead of it (round-trip time above its floor, or packets lost), as
 * LEDBAT does for background transfers. Measured on the publish connection once a second.
 * The bot follows the same rule (improv_capture/tools/bot/studio_upload.py, `CallBudget`);
 * the constants are docs/api.md's ("Uploads", pacing).
 */

/** The budget never goes below this: a link the call fills must still drain the copy. */
export const MIN_BUDGET_BPS = 250_000;
/** Added each healthy second. */
const STEP_BPS = 250_000;
/** The call is healthy while its round-trip time stays within this of its lowest. */
const RTT_SLACK_S = 0.025;
/** ... and while its receivers lose less than this fraction of its packets. */
const MAX_LOSS = 0.02;
/** The lowest round-trip time is the lowest of this many last samples. */
const RTT_FLOOR_SAMPLES = 30;
const SAMPLE_MS = 1000;

/**
 * The call's round-trip time (s) and the worst loss fraction its receivers report.
 * @param {RTCStatsReport} stats
 * @returns {{rtt: number | null, loss: number}}
 */
function callHealth(stats) {
  /** @type {number | null} */
  let rtt = null;
  let loss = 0;
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && typeof s.currentRoundTripTime === 'number') {
      rtt = s.currentRoundTripTime;
    }
    if (s.type === 'remote-inbound-rtp' && typeof s.fractionLost === 'number') {
      loss = Math.max(loss, s.fractionLost);
    }
  });
  return { rtt, loss };
}

export class CallBudget {
  /**
   * @param {() => RTCPeerConnection | null} pc the publish connection, when there is one
   * @param {number} [maxBps] the budget's ceiling (the copy's own bitrate, twice over)
   */
  constructor(pc, maxBps = 8_000_000) {
    this.pc = pc;
    this.maxBps = maxBps;
    /** Current budget in bit/s. */
    this.bps = MIN_BUDGET_BPS;
    /** @type {{rtt: number | null, rtt_floor: number | null, loss: number}} the last sample */
    this.measured = { rtt: null, rtt_floor: null, loss: 0 };
    /** @type {number[]} */
    this.rtts = [];
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
  }

  /** Measure once a second until `stop`. */
  start() {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => { this.sample().catch(() => {}); }, SAMPLE_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = undefined;
    this.rtts = [];
    this.bps = MIN_BUDGET_BPS;
  }

  async sample() {
    const pc = this.pc();
    if (!pc || pc.connectionState === 'closed') {
      this.bps = MIN_BUDGET_BPS;
      return;
    }
    const { rtt, loss } = callHealth(await pc.getStats());
    if (rtt !== null) {
      this.rtts.push(rtt);
      if (this.rtts.length > RTT_FLOOR_SAMPLES) this.rtts.shift();
    }
    const floor = this.rtts.length ? Math.min(...this.rtts) : null;
    this.measured = { rtt, rtt_floor: floor, loss };
    const healthy = loss < MAX_LOSS && (rtt === null || floor === null || rtt <= floor + RTT_SLACK_S);
    this.bps = healthy
      ? Math.min(this.maxBps, this.bps + STEP_BPS)
      : Math.max(MIN_BUDGET_BPS, this.bps / 2);
  }
}
