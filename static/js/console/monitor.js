// @ts-check
/**
 * The receive-only monitor of the watched room: `watch` over the operator socket, answer every
 * `subscribe_offer` on one RTCPeerConnection (no trickle: wait for ICE gathering, at most 3 s),
 * and map incoming streams to performers by `event.streams[0].id == peer.stream_id`. Tracks and
 * the peers list arrive in either order; both are kept and reconciled on every change.
 */

const GATHER_TIMEOUT_MS = 3000;
const MAX_PC_RETRIES = 5;

/**
 * @typedef {{performer_id: string, display_name?: string, stream_id?: string | null, state?: string}} Peer
 * @typedef {import('./tiles.js').TileGrid} TileGrid
 */

/**
 * Resolve when ICE gathering is complete, or after `ms` (then send what we have).
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function gatheringDone(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') finish(); };
    const timer = setTimeout(finish, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

export class Monitor {
  /**
   * @param {{tiles: TileGrid, send: (msg: any) => boolean, iceServers: () => RTCIceServer[],
   *   onStatus: (text: string) => void}} opts
   */
  constructor({ tiles, send, iceServers, onStatus }) {
    this.tiles = tiles;
    this.send = send;
    this.iceServers = iceServers;
    this.onStatus = onStatus;
    /** @type {string | null} */
    this.roomId = null;
    /** @type {Peer[] | null} the server's list for this watch; null until one arrives */
    this.peers = null;
    /** @type {Peer[]} the room description's performers, shown until the peers list arrives */
    this.roomPerformers = [];
    /** @type {Map<string, MediaStream>} stream id -> stream */
    this.streams = new Map();
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** Bumped on every reset so answers of an old negotiation are dropped. */
    this.gen = 0;
    /** @type {Promise<void>} offers are answered strictly one after another */
    this.chain = Promise.resolve();
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
    this.peers = null;
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
    if (!this.peers) this._render();
  }

  /** @param {any} msg a server message */
  handle(msg) {
    if (msg.room_id && msg.room_id !== this.roomId) return;
    if (!this.roomId) return;
    if (msg.type === 'peers') {
      this._setPeers(msg.peers);
    } else if (msg.type === 'subscribe_offer') {
      if (Array.isArray(msg.peers)) this._setPeers(msg.peers);
      const gen = this.gen;
      this.chain = this.chain
        .then(() => this._answer(String(msg.sdp ?? ''), gen))
        .catch((err) => this.onStatus(`Monitor: ${err?.message ?? err}`));
    }
  }

  /** @returns {string} the monitor connection's state, for debugging */
  get connectionState() {
    return this.pc?.connectionState ?? 'none';
  }

  /** @param {any} peers */
  _setPeers(peers) {
    this.peers = Array.isArray(peers) ? peers.filter((p) => p && p.performer_id) : [];
    // Forget streams nobody refers to any more and that carry nothing live.
    const wanted = new Set(this.peers.map((p) => p.stream_id).filter(Boolean));
    for (const [id, s] of this.streams) {
      if (!wanted.has(id) && !s.getTracks().some((t) => t.readyState === 'live')) this.streams.delete(id);
    }
    this._render();
  }

  _render() {
    const list = this.peers ?? this.roomPerformers;
    this.tiles.setPerformers(list);
    for (const p of list) {
      const stream = (p.stream_id && this.streams.get(p.stream_id)) || null;
      this.tiles.setStream(p.performer_id, stream);
    }
  }

  /**
   * @param {string} sdp
   * @param {number} gen
   */
  async _answer(sdp, gen) {
    if (gen !== this.gen || !this.roomId) return;
    let pc = this.pc;
    if (!pc) {
      pc = new RTCPeerConnection({ iceServers: this.iceServers(), bundlePolicy: 'max-bundle' });
      this.pc = pc;
      const own = pc;
      pc.addEventListener('track', (ev) => this._onTrack(ev));
      pc.addEventListener('connectionstatechange', () => this._onPcState(own));
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gatheringDone(pc, GATHER_TIMEOUT_MS);
    if (gen !== this.gen || this.pc !== pc) return; // reset while gathering
    this.send({ type: 'subscribe_answer', sdp: pc.localDescription?.sdp });
  }

  /** @param {RTCTrackEvent} ev */
  _onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return; // the server always sets an msid; without one it cannot be mapped
    this.streams.set(stream.id, stream);
    stream.onaddtrack = () => this._render();
    stream.onremovetrack = () => this._render();
    ev.track.onunmute = () => this._render();
    ev.track.onended = () => this._render();
    this._render();
  }

  /** @param {RTCPeerConnection} pc */
  _onPcState(pc) {
    if (pc !== this.pc) return;
    if (pc.connectionState === 'connected') {
      this.retries = 0;
      this.onStatus('');
    } else if (pc.connectionState === 'failed' && this.roomId) {
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
    this.gen += 1;
    this.pc?.close();
    this.pc = null;
    this.chain = Promise.resolve();
    this.streams.clear();
    this._render();
  }
}
