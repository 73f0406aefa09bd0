// @ts-check
/**
 * A level meter element for a remote performer: the performer page's LevelMeter (one source
 * of the RMS rule, static/js/media.js), drawn as a bar and exposed as `data-level`.
 */
import { LevelMeter as StreamLevel, meterFraction, resumeAudio } from '../media.js';

export { resumeAudio };

export class LevelMeter {
  /**
   * @param {HTMLElement} el meter element: gets data-level; its first child is the bar
   */
  constructor(el) {
    this.el = el;
    this.bar = /** @type {HTMLElement | null} */ (el.firstElementChild);
    this.meter = new StreamLevel((level) => this._draw(level));
    this._draw(0);
  }

  /** @returns {number} the current RMS level, 0..1 */
  get level() {
    return this.meter.level;
  }

  /**
   * Measure this stream's first audio track. Chrome feeds Web Audio from a remote track only
   * while a media element plays its stream, so set the element's srcObject first (muted is fine).
   * @param {MediaStream | null} stream
   */
  setStream(stream) {
    this.meter.setStream(stream);
  }

  /** @param {number} level */
  _draw(level) {
    this.el.dataset.level = level.toFixed(4);
    if (this.bar) this.bar.style.clipPath = `inset(0 ${100 - Math.round(meterFraction(level) * 100)}% 0 0)`;
  }

  stop() {
    this.meter.stop();
  }
}
