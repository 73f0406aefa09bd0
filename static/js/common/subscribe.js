// @ts-check
/**
 * The subscribe side of a page, the same for the performer page's tiles and the console's
 * monitor: one RTCPeerConnection that answers every `subscribe_offer` in order, and the remote
 * streams it brings mapped to performers by `event.streams[0].id == peer.stream_id` (the msid the
 * server gives each performer). Tracks and the `peers` list arrive in either order; both are kept,
 * and `onChange` asks the page to reconcile its tiles with `peers` and `streamOf()`.
 */
import { connectionConfig, gatheringDone } from './connection.js';

/**
 * @typedef {{performer_id: string, display_name?: string, stream_id?: string | null,
 *   state?: 'joined' | 'reconnecting' | string}} Peer
 */

export class RemoteMedia {
  /**
   * @param {object} opts
   * @param {(msg: {type: string, [key: string]: any}) => boolean} opts.send
   * @param {() => RTCIceServer[]} opts.iceServers
   * @param {() => void} opts.onChange peers or streams changed: reconcile the tiles
   * @param {(err: any) => void} opts.onError an offer could not be answered
   * @param {(state: RTCPeerConnectionState) => void} [opts.onConnectionState]
   */
  constructor({ send, iceServers, onChange, onError, onConnectionState }) {
    this.send = send;
    this.iceServers = iceServers;
    this.onChange = onChange;
    this.onError = onError;
    this.onConnectionState = onConnectionState;
    /** @type {Peer[] | null} the server's latest list; null until one arrives */
    this.peers = null;
    /** @type {Map<string, MediaStream>} stream id -> stream, from track events */
    this.streams = new Map();
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** Bumped on every reset so late steps of an old negotiation drop their result. */
    this.gen = 0;
    /** @type {Promise<void>} offers are answered strictly one after another */
    this.chain = Promise.resolve();
  }

  /**
   * Take a `peers` or `subscribe_offer` message.
   * @param {{type: string, [key: string]: any}} msg
   * @returns {Promise<void>} settles once this offer is answered (or dropped)
   */
  handle(msg) {
    if (msg.type === 'peers') this.setPeers(msg.peers);
    if (msg.type !== 'subscribe_offer') return Promise.resolve();
    if (Array.isArray(msg.peers)) this.setPeers(msg.peers);
    const gen = this.gen;
    // A re-offer waits for the previous answer.
    this.chain = this.chain
      .then(() => this._answer(String(msg.sdp ?? ''), gen))
      .catch((err) => this.onError(err));
    return this.chain;
  }

  /**
   * Replace the peer list, and forget streams nobody refers to that carry nothing live.
   * @param {any} peers
   */
  setPeers(peers) {
    this.peers = Array.isArray(peers) ? peers.filter((p) => p && p.performer_id) : [];
    const wanted = new Set(this.peers.map((p) => p.stream_id).filter(Boolean));
    for (const [id, stream] of this.streams) {
      const live = stream.getTracks().some((t) => t.readyState === 'live');
      if (!wanted.has(id) && !live) this.streams.delete(id);
    }
    this.onChange();
  }

  /**
   * The stream a performer publishes, once its tracks arrived.
   * @param {Peer} peer
   * @returns {MediaStream | null}
   */
  streamOf(peer) {
    return (peer.stream_id && this.streams.get(peer.stream_id)) || null;
  }

  /** @returns {RTCPeerConnectionState | 'none'} */
  get connectionState() {
    return this.pc?.connectionState ?? 'none';
  }

  /** Close the connection and forget its streams (the peer list stays until `forgetPeers`). */
  reset() {
    this.gen += 1;
    this.pc?.close();
    this.pc = null;
    this.chain = Promise.resolve();
    this.streams.clear();
  }

  forgetPeers() {
    this.peers = null;
  }

  /**
   * @param {string} sdp
   * @param {number} gen
   */
  async _answer(sdp, gen) {
    if (gen !== this.gen) return;
    let pc = this.pc;
    if (!pc) {
      pc = new RTCPeerConnection(connectionConfig(this.iceServers()));
      this.pc = pc;
      const own = pc;
      pc.addEventListener('track', (ev) => this._addTrack(ev));
      pc.addEventListener('connectionstatechange', () => {
        if (this.pc === own) this.onConnectionState?.(own.connectionState);
      });
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gatheringDone(pc);
    if (gen !== this.gen || this.pc !== pc) return; // reset while gathering
    this.send({ type: 'subscribe_answer', sdp: pc.localDescription?.sdp });
  }

  /** @param {RTCTrackEvent} ev */
  _addTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return; // the server always sets an msid; without one it cannot be mapped
    this.streams.set(stream.id, stream);
    // The server drops and re-adds tracks on renegotiation: reconcile on every change.
    stream.onaddtrack = () => this.onChange();
    stream.onremovetrack = () => this.onChange();
    ev.track.onunmute = () => this.onChange();
    ev.track.onended = () => this.onChange();
    this.onChange();
  }
}
