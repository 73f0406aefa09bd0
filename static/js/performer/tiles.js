// @ts-check
/**
 * Remote tiles: one <video data-testid="remote-video"> per other performer that publishes, drawn
 * from the subscribe side's peers and streams (../common/subscribe.js) on every change.
 */
import { h } from '../common/dom.js';
import { LevelMeter } from '../common/meter.js';
import { MediaTiles } from '../common/tiles.js';

/**
 * @typedef {import('../common/subscribe.js').Peer} Peer
 * @typedef {{el: HTMLElement, video: HTMLVideoElement, name: HTMLElement, note: HTMLElement,
 *   meter: LevelMeter, stream: MediaStream | null}} Tile
 */

/** @extends {MediaTiles<Tile>} */
export class RemoteTiles extends MediaTiles {
  /**
   * @param {HTMLElement} grid container the tiles go into
   */
  constructor(grid) {
    super(grid);
    /** @type {string | null} our own performer id: never shown as a tile */
    this.selfId = null;
  }

  /**
   * Show a tile for each of these performers that publishes, with its stream once it arrived.
   * @param {Peer[]} peers
   * @param {(peer: Peer) => MediaStream | null} streamOf
   */
  render(peers, streamOf) {
    const present = new Set();
    for (const peer of peers) {
      if (peer.performer_id === this.selfId) continue;
      // A dropped performer keeps their tile (marked reconnecting) even if the server has
      // withdrawn their stream; someone who never published gets none.
      const keep = peer.state === 'reconnecting' && this.tiles.has(peer.performer_id);
      if (!peer.stream_id && !keep) continue;
      present.add(peer.performer_id);
      const tile = this.tiles.get(peer.performer_id) ?? this._createTile(peer.performer_id);
      this._updateTile(tile, peer, streamOf(peer));
    }
    for (const id of [...this.tiles.keys()]) if (!present.has(id)) this.remove(id);
    this.grid.dataset.count = String(this.tiles.size);
  }

  /**
   * @param {string} performerId
   * @returns {Tile}
   */
  _createTile(performerId) {
    const video = /** @type {HTMLVideoElement} */ (h('video', {
      dataset: { testid: 'remote-video', performerId },
      autoplay: true,
      playsInline: true,
      attrs: { playsinline: '' },
    }));
    const name = h('span', { className: 'tile-name' });
    const note = h('span', { className: 'tile-note' });
    const meterEl = h('span', { className: 'tile-meter' }, h('span'));
    const el = h('figure', { className: 'tile', dataset: { performerId } },
      video, h('figcaption', {}, meterEl, name, note));
    this.grid.append(el);
    /** @type {Tile} */
    const tile = { el, video, name, note, meter: new LevelMeter(meterEl), stream: null };
    this.tiles.set(performerId, tile);
    return tile;
  }

  /**
   * @param {Tile} tile
   * @param {Peer} peer
   * @param {MediaStream | null} stream
   */
  _updateTile(tile, peer, stream) {
    tile.name.textContent = peer.display_name || peer.performer_id;
    const reconnecting = peer.state === 'reconnecting';
    tile.el.classList.toggle('reconnecting', reconnecting);
    tile.el.classList.toggle('waiting', !stream);
    tile.note.textContent = reconnecting ? 'reconnecting…' : stream ? '' : 'connecting…';
    this.attach(tile, stream, playWithSound);
  }
}

/**
 * Play a remote performer with sound; where autoplay with sound is refused, play muted and
 * unmute on the next click anywhere.
 * @param {HTMLVideoElement} video
 */
function playWithSound(video) {
  video.muted = false;
  video.play().catch((err) => {
    if (err?.name !== 'NotAllowedError') return;
    video.muted = true;
    video.play().catch(() => {});
    document.addEventListener('click', () => { video.muted = false; }, { once: true });
  });
}
