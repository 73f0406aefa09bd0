// @ts-check
/**
 * Remote tiles: one <video data-testid="remote-video"> per other performer that publishes.
 * Streams (from the subscribe PC's `track` events) and the `peers` list arrive in either order;
 * both are kept and reconciled, keyed by the msid stream id the server gives each performer.
 */
import { LevelMeter, meterFraction } from './media.js';

/**
 * @typedef {{performer_id: string, display_name: string, stream_id: string | null,
 *   state: 'joined' | 'reconnecting' | string}} Peer
 */

/**
 * @typedef {{el: HTMLElement, video: HTMLVideoElement, name: HTMLElement, note: HTMLElement,
 *   bar: HTMLElement, meter: LevelMeter, stream: MediaStream | null}} Tile
 */

export class TileManager {
  /**
   * @param {HTMLElement} grid container the tiles go into
   */
  constructor(grid) {
    this.grid = grid;
    /** @type {string | null} our own performer id: never shown as a tile */
    this.selfId = null;
    /** @type {Peer[]} */
    this.peers = [];
    /** @type {Map<string, MediaStream>} stream id -> stream, from track events */
    this.streams = new Map();
    /** @type {Map<string, Tile>} performer id -> tile */
    this.tiles = new Map();
  }

  /**
   * Replace the peer list (from `peers` or `subscribe_offer`).
   * @param {Peer[]} peers
   */
  setPeers(peers) {
    this.peers = Array.isArray(peers) ? peers.filter((p) => p && p.performer_id !== this.selfId) : [];
    this._pruneStreams();
    this._reconcile();
  }

  /**
   * Handle the subscribe PC's `track` event.
   * @param {RTCTrackEvent} ev
   */
  addTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return; // the server always sets an msid; without one we cannot map it
    this.streams.set(stream.id, stream);
    // The server drops and re-adds tracks on renegotiation: re-point meters and tiles.
    stream.onaddtrack = () => this._reconcile();
    stream.onremovetrack = () => this._reconcile();
    ev.track.onunmute = () => this._reconcile();
    this._reconcile();
  }

  /**
   * Current RMS level (0..1) of a performer's received audio; 0 without a tile.
   * @param {string} performerId
   * @returns {number}
   */
  level(performerId) {
    return this.tiles.get(performerId)?.meter.level ?? 0;
  }

  /** Drop every tile and stream (the subscribe PC is gone). */
  clear() {
    for (const id of [...this.tiles.keys()]) this._removeTile(id);
    this.streams.clear();
  }

  /** Forget streams no peer refers to and that carry nothing any more (keeps the map small). */
  _pruneStreams() {
    const wanted = new Set(this.peers.map((p) => p.stream_id).filter(Boolean));
    for (const [id, stream] of this.streams) {
      const live = stream.getTracks().some((t) => t.readyState === 'live');
      if (!wanted.has(id) && !live) this.streams.delete(id);
    }
  }

  _reconcile() {
    const present = new Set();
    for (const peer of this.peers) {
      // A dropped performer keeps their tile (marked reconnecting) even if the server has
      // withdrawn their stream; someone who never published gets none.
      const keep = peer.state === 'reconnecting' && this.tiles.has(peer.performer_id);
      if (!peer.stream_id && !keep) continue;
      present.add(peer.performer_id);
      const tile = this.tiles.get(peer.performer_id) ?? this._createTile(peer.performer_id);
      this._updateTile(tile, peer, (peer.stream_id && this.streams.get(peer.stream_id)) || null);
    }
    for (const id of [...this.tiles.keys()]) if (!present.has(id)) this._removeTile(id);
    this.grid.dataset.count = String(this.tiles.size);
  }

  /**
   * @param {string} performerId
   * @returns {Tile}
   */
  _createTile(performerId) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.dataset.performerId = performerId;

    const video = document.createElement('video');
    video.dataset.testid = 'remote-video';
    video.dataset.performerId = performerId;
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute('playsinline', '');

    const caption = document.createElement('figcaption');
    const name = document.createElement('span');
    name.className = 'tile-name';
    const note = document.createElement('span');
    note.className = 'tile-note';
    const meterEl = document.createElement('span');
    meterEl.className = 'tile-meter';
    const bar = document.createElement('span');
    meterEl.append(bar);
    caption.append(meterEl, name, note);
    el.append(video, caption);
    this.grid.append(el);

    const meter = new LevelMeter((level) => {
      bar.style.width = `${Math.round(meterFraction(level) * 100)}%`;
    });
    /** @type {Tile} */
    const tile = { el, video, name, note, bar, meter, stream: null };
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
    if (stream !== tile.stream) {
      tile.stream = stream;
      // Audio and video in one element, so the browser lip-syncs them.
      tile.video.srcObject = stream;
      if (stream) this._play(tile.video);
    }
    // Chrome only feeds Web Audio from a remote stream that a media element plays: set the
    // meter after srcObject.
    tile.meter.setStream(stream);
  }

  /** @param {HTMLVideoElement} video */
  _play(video) {
    video.muted = false;
    video.play().catch((err) => {
      if (err?.name !== 'NotAllowedError') return;
      // Autoplay with sound was refused: play muted, unmute on the next click anywhere.
      video.muted = true;
      video.play().catch(() => {});
      document.addEventListener('click', () => { video.muted = false; }, { once: true });
    });
  }

  /** @param {string} performerId */
  _removeTile(performerId) {
    const tile = this.tiles.get(performerId);
    if (!tile) return;
    tile.meter.stop();
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(performerId);
  }
}
