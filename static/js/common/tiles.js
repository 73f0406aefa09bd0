// @ts-check
/**
 * What the performer page's tiles and the console's monitor tiles have in common: one tile per
 * performer, keyed by performer id, each an element with a <video> and a level meter that follow
 * the performer's stream. The pages build and label their own tiles.
 */

/**
 * @typedef {import('./meter.js').LevelMeter} LevelMeter
 * @typedef {{el: HTMLElement, video: HTMLVideoElement, meter: LevelMeter,
 *   stream: MediaStream | null}} MediaTile
 */

/** @template {MediaTile} T */
export class MediaTiles {
  /** @param {HTMLElement} grid container the tiles go into */
  constructor(grid) {
    this.grid = grid;
    /** @type {Map<string, T>} performer id -> tile */
    this.tiles = new Map();
  }

  /**
   * Current RMS level (0..1) of a performer's received audio; 0 without a tile.
   * @param {string} performerId
   * @returns {number}
   */
  level(performerId) {
    return this.tiles.get(performerId)?.meter.level ?? 0;
  }

  /**
   * Point a tile's video and meter at a stream (or at nothing).
   * @param {T} tile
   * @param {MediaStream | null} stream
   * @param {(video: HTMLVideoElement) => void} play starts a new stream playing
   */
  attach(tile, stream, play) {
    if (stream !== tile.stream) {
      tile.stream = stream;
      // Audio and video in one element, so the browser lip-syncs them.
      tile.video.srcObject = stream;
      if (stream) play(tile.video);
    }
    // Chrome feeds Web Audio from a remote stream only while a media element plays it: set the
    // meter after srcObject.
    tile.meter.setStream(stream);
  }

  /** @param {string} performerId */
  remove(performerId) {
    const tile = this.tiles.get(performerId);
    if (!tile) return;
    tile.meter.stop();
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(performerId);
  }

  /** Drop every tile. */
  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }
}
