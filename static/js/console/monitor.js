// @ts-check
/**
 * The receive-only monitor of the watched room: `watch` over the operator socket, and the
 * subscribe side shared with the performer page (../common/subscribe.js) to answer the monitor's
 * offers and map its streams to performers; the tiles show the room description's performers
 * until the server's peers list arrives.
 */
import { RemoteMedia } from '../common/subscribe.js';

const MAX_PC_RETRIES = 5;

/**
 * @typedef {import('../common/subscribe.js').Peer} Peer
 * @typedef {import('./tiles.js').TileGrid} TileGrid
 */

export class Monitor {
  /**
   * @param {{tiles: TileGrid, send: (msg: any) => boolean, iceServers: () => RTCIceServer[],
   *   onStatus: (text: string) => void}} opts
   */
  constructor({ tiles, send, iceServers, onStatus }) {
    this.tiles = tiles;
    this.send = send;
    this.onStatus = onStatus;
    /** @type {string | null} */
    this.roomId = null;
    /** @type {Peer[]} the room description's performers, shown until the peers list arrives */
    this.roomPerformers = [];
    this.remote = new RemoteMedia({
      send,
      iceServers,
      onChange: () => this._render(),
      onError: (err) => this.onStatus(`Monitor: ${err?.message ?? err}`),
      onConnectionState: (state) => this._onConnectionState(state),
    });
    this.retries = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
  }

  /**
   * Start monitoring a room (or stop, with null).
   * @param {string | null} roomId
   */
  watch(roomId) {
    if (roomId === this.roomId) return;
    const was = this.roomId;
    this._reset();
    this.roomId = roomId;
    this.remote.forgetPeers();
    this.roomPerformers = [];
    this.tiles.clear();
    if (roomId) this.send({ type: 'watch', room_id: roomId });
    else if (was) this.send({ type: 'unwatch' });
  }

  /** The socket was (re)accepted: the server forgot our monitor, ask again. */
  rewatch() {
    this._reset();
    this.retries = 0;
    if (this.roomId) this.send({ type: 'watch', room_id: this.roomId });
  }

  /**
   * The room description's performers (names and states before the monitor negotiates).
   * @param {Peer[]} performers
   */
  setRoomPerformers(performers) {
    this.roomPerformers = Array.isArray(performers) ? performers : [];
    if (!this.remote.peers) this._render();
  }

  /** @param {any} msg a server message: `peers`, `subscribe_offer` or `watch_ended` */
  handle(msg) {
    if (msg.room_id && msg.room_id !== this.roomId) return;
    if (!this.roomId) return;
    if (msg.type === 'watch_ended') {
      // The room left the node its media came from; the server follows it and offers again.
      this._reset();
      this.onStatus('The room is moving to another node, following it…');
      return;
    }
    this.remote.handle(msg);
  }

  /** @returns {Peer[] | null} the server's list for this watch; null until one arrives */
  get peers() {
    return this.remote.peers;
  }

  /** @returns {RTCPeerConnection | null} */
  get pc() {
    return this.remote.pc;
  }

  /** @returns {string} the monitor connection's state, for debugging */
  get connectionState() {
    return this.remote.connectionState;
  }

  _render() {
    const list = this.remote.peers ?? this.roomPerformers;
    this.tiles.setPerformers(list);
    for (const p of list) this.tiles.setStream(p.performer_id, this.remote.streamOf(p));
  }

  /** @param {RTCPeerConnectionState} state */
  _onConnectionState(state) {
    if (state === 'connected') {
      this.retries = 0;
      this.onStatus('');
    } else if (state === 'failed' && this.roomId) {
      // Ask for a fresh monitor, a few times, with a pause.
      if (this.retries >= MAX_PC_RETRIES) {
        this.onStatus('The monitor connection failed (check the network or firewall)');
        return;
      }
      this.retries += 1;
      this.onStatus('Monitor connection lost, reconnecting…');
      const roomId = this.roomId;
      this._reset();
      this.send({ type: 'unwatch' });
      this.retryTimer = setTimeout(() => {
        if (this.roomId === roomId) this.send({ type: 'watch', room_id: roomId });
      }, 1500);
    }
  }

  _reset() {
    clearTimeout(this.retryTimer);
    this.remote.reset();
    this._render();
  }
}
