// @ts-check
/**
 * Monitor tiles: one per performer, with the video (muted by default, per-tile listen toggle),
 * an audio level meter, the stats the server pushes every second, problem flags, a studio
 * room's high-quality upload state and a remove button. Knows nothing about WebRTC: the monitor
 * hands it performers and streams.
 */
import { h } from '../common/dom.js';
import { LevelMeter } from '../common/meter.js';
import { MediaTiles } from '../common/tiles.js';
import { hqText, hqTitle } from './uploads.js';

/**
 * @typedef {{performer_id: string, display_name?: string, state?: string}} Performer
 * @typedef {{state?: string, video?: any, audio?: any, rtt_ms?: number | null, flags?: string[]}} PerfStats
 * @typedef {{el: HTMLElement, video: HTMLVideoElement, name: HTMLElement, state: HTMLElement,
 *   flags: HTMLElement, placeholder: HTMLElement, stats: HTMLElement, listen: HTMLButtonElement,
 *   hq: HTMLElement, meter: LevelMeter, stream: MediaStream | null, displayName: string}} Tile
 * @typedef {import('./uploads.js').Upload} Upload
 */

const FLAG_TEXT = /** @type {Record<string, string>} */ ({
  frozen: 'Video frozen',
  silent: 'Mic silent',
  lossy: 'Packet loss',
});

/** @param {number | null | undefined} v @param {number} [digits] */
function num(v, digits = 0) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–';
}

/** @extends {MediaTiles<Tile>} */
export class TileGrid extends MediaTiles {
  /**
   * @param {HTMLElement} grid
   * @param {{onRemove: (performerId: string, name: string) => void}} opts
   */
  constructor(grid, { onRemove }) {
    super(grid);
    this.onRemove = onRemove;
    /** @type {Map<string, Upload>} performer id -> the high-quality upload of the latest session */
    this.uploads = new Map();
  }

  /**
   * Show exactly these performers, in this order.
   * @param {Performer[]} performers
   */
  setPerformers(performers) {
    const wanted = new Set(performers.map((p) => p.performer_id));
    for (const id of [...this.tiles.keys()]) if (!wanted.has(id)) this.remove(id);
    for (const p of performers) {
      const tile = this.tiles.get(p.performer_id) ?? this._create(p.performer_id);
      tile.displayName = p.display_name || p.performer_id;
      tile.name.textContent = tile.displayName;
      tile.name.title = p.performer_id;
      const state = p.state || 'joined';
      tile.el.dataset.state = state;
      tile.state.textContent = state === 'joined' ? '' : state;
      tile.state.hidden = state === 'joined';
      this._hq(tile, this.uploads.get(p.performer_id));
      this.grid.append(tile.el); // keeps the order; a no-op move when already in place
    }
    this.grid.dataset.count = String(this.tiles.size);
  }

  /**
   * A studio room's uploads (see ./uploads.js latestUploads).
   * @param {Map<string, Upload>} uploads
   */
  setUploads(uploads) {
    this.uploads = uploads;
    for (const [id, tile] of this.tiles) this._hq(tile, uploads.get(id));
  }

  /**
   * @param {Tile} tile
   * @param {Upload | undefined} upload
   */
  _hq(tile, upload) {
    tile.hq.hidden = !upload;
    tile.hq.textContent = upload ? hqText(upload) : '';
    tile.hq.title = upload ? hqTitle(upload) : '';
    tile.hq.dataset.state = upload?.state ?? '';
  }

  /**
   * @param {string} performerId
   * @param {MediaStream | null} stream
   */
  setStream(performerId, stream) {
    const tile = this.tiles.get(performerId);
    if (!tile) return;
    // Muted until the operator asks to listen, so no sound policy can refuse it.
    this.attach(tile, stream, (video) => { video.play().catch(() => {}); });
    const hasVideo = !!stream?.getVideoTracks().some((t) => t.readyState === 'live');
    tile.placeholder.hidden = hasVideo;
    tile.el.classList.toggle('no-media', !hasVideo);
  }

  /**
   * The `stats` message's performers map.
   * @param {Record<string, PerfStats>} performers
   */
  setStats(performers) {
    for (const [id, tile] of this.tiles) this._stats(tile, performers?.[id] ?? null);
  }

  /** @returns {Record<string, number>} performer id -> RMS level 0..1 */
  levels() {
    return Object.fromEntries([...this.tiles].map(([id, t]) => [id, t.meter.level]));
  }

  clear() {
    super.clear();
    this.grid.dataset.count = '0';
  }

  /**
   * @param {string} id
   * @returns {Tile}
   */
  _create(id) {
    const video = /** @type {HTMLVideoElement} */ (h('video', {
      className: 'mtile-video',
      dataset: { testid: 'monitor-video', performerId: id },
      attrs: { muted: '', autoplay: '', playsinline: '' },
    }));
    video.muted = true; // the operator must not hear echo unless they ask for it
    video.autoplay = true;
    video.playsInline = true;

    const placeholder = h('div', { className: 'mtile-placeholder' }, 'No video yet');
    const flags = h('div', { className: 'mtile-flags', attrs: { 'aria-live': 'polite' } });
    const name = h('span', { className: 'mtile-name' });
    const state = h('span', { className: 'mtile-state', hidden: true });
    const meterEl = h('span', {
      className: 'meter mtile-meter', dataset: { testid: 'audio-level', level: '0', performerId: id },
      title: 'Audio level',
    }, h('span', { className: 'meter-fill' }));
    const listen = /** @type {HTMLButtonElement} */ (h('button', {
      type: 'button', className: 'small', dataset: { testid: 'tile-unmute' },
      attrs: { 'aria-pressed': 'false' }, title: 'Play this performer\u2019s audio here',
    }, 'Listen'));
    const remove = h('button', {
      type: 'button', className: 'small danger', dataset: { testid: 'remove-performer', performerId: id },
      title: 'Remove this performer from the room',
    }, 'Remove');
    const stats = h('div', { className: 'mtile-stats', dataset: { testid: 'tile-stats' } }, 'waiting for stats…');
    const hq = h('span', { className: 'mtile-hq', dataset: { testid: 'tile-hq', performerId: id }, hidden: true });

    const el = h('figure', { className: 'mtile', dataset: { testid: 'monitor-tile', performerId: id, flags: '' } },
      h('div', { className: 'mtile-media' }, video, placeholder, flags),
      h('figcaption', { className: 'mtile-bar' }, name, state, hq, meterEl, listen, remove),
      stats);

    /** @type {Tile} */
    const tile = {
      el, video, name, state, flags, placeholder, stats, listen, hq,
      meter: new LevelMeter(meterEl), stream: null, displayName: id,
    };
    listen.addEventListener('click', () => {
      const on = video.muted;
      video.muted = !on;
      video.toggleAttribute('muted', !on);
      if (on) video.play().catch(() => {});
      listen.setAttribute('aria-pressed', String(on));
      listen.textContent = on ? 'Mute' : 'Listen';
      listen.classList.toggle('on', on);
    });
    remove.addEventListener('click', () => this.onRemove(id, tile.displayName));
    this.tiles.set(id, tile);
    return tile;
  }

  /**
   * @param {Tile} tile
   * @param {PerfStats | null} s
   */
  _stats(tile, s) {
    const flags = Array.isArray(s?.flags) ? s.flags.map(String) : [];
    const key = flags.join(' ');
    if (tile.el.dataset.flags !== key) {
      tile.el.dataset.flags = key;
      tile.flags.replaceChildren(...flags.map((f) => {
        let text = FLAG_TEXT[f] ?? f;
        if (f === 'lossy') {
          const loss = Math.max(s?.video?.loss_pct ?? 0, s?.audio?.loss_pct ?? 0);
          if (loss) text = `Loss ${loss.toFixed(1)}%`;
        }
        return h('span', { className: `flag flag-${f}`, dataset: { testid: `flag-${f}` } }, text);
      }));
    } else if (flags.includes('lossy')) {
      const badge = tile.flags.querySelector('.flag-lossy');
      const loss = Math.max(s?.video?.loss_pct ?? 0, s?.audio?.loss_pct ?? 0);
      if (badge && loss) badge.textContent = `Loss ${loss.toFixed(1)}%`;
    }
    tile.el.classList.toggle('flagged', flags.length > 0);
    if (!s) return;

    const v = s.video;
    const a = s.audio;
    const loss = Math.max(v?.loss_pct ?? 0, a?.loss_pct ?? 0);
    const jitter = Math.max(v?.jitter_ms ?? 0, a?.jitter_ms ?? 0);
    /**
     * @param {string} key data-stat
     * @param {string} label
     * @param {string} value
     * @param {boolean} [bad]
     */
    const stat = (key, label, value, bad = false) => h('span', { className: `stat${bad ? ' bad' : ''}`, dataset: { stat: key } },
      label ? h('span', { className: 'stat-label' }, `${label} `) : null, value);
    tile.stats.replaceChildren(
      h('div', { className: 'stat-line' },
        stat('bitrate', 'video', v ? `${num(v.bitrate_kbps)} kbps` : 'off'),
        v ? stat('fps', '', `${num(v.fps)} fps`) : null,
        v?.width && v?.height ? stat('resolution', '', `${v.width}×${v.height}`) : null),
      h('div', { className: 'stat-line' },
        stat('audio', 'audio', a ? `${num(a.bitrate_kbps)} kbps` : 'off'),
        typeof a?.level_dbov === 'number' ? stat('level', '', `${num(a.level_dbov)} dBov`) : null),
      h('div', { className: 'stat-line' },
        stat('loss', 'loss', `${loss.toFixed(1)}%`, loss > 5),
        stat('jitter', 'jitter', `${num(jitter)} ms`),
        stat('rtt', 'rtt', `${num(s.rtt_ms)} ms`)));
  }
}
