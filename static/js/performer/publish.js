// @ts-check
/**
 * The publish connection: the performer's camera and microphone to the server (sendonly, Opus
 * and VP8 only, the server's video bitrate cap set at the source, since the relay forwards our
 * packets as they are; in a studio room also the scale-down to the live size).
 */
import { connectionConfig, gatheringDone } from '../common/connection.js';

/**
 * Limit a transceiver to the codecs the server accepts, where the browser lets us.
 * @param {RTCRtpTransceiver} transceiver
 * @param {'audio' | 'video'} kind
 * @param {string[]} mimeTypes lower case
 */
function preferCodecs(transceiver, kind, mimeTypes) {
  if (!transceiver.setCodecPreferences) return;
  // Chrome validates preferences against receiver capabilities, older ones against sender's.
  for (const caps of [RTCRtpReceiver.getCapabilities(kind), RTCRtpSender.getCapabilities(kind)]) {
    const codecs = (caps?.codecs ?? []).filter((c) => mimeTypes.includes(c.mimeType.toLowerCase()));
    if (!codecs.some((c) => !c.mimeType.toLowerCase().endsWith('/rtx'))) continue;
    try {
      transceiver.setCodecPreferences(codecs);
      return;
    } catch {
      // try the next capability list; the server drops other codecs anyway
    }
  }
}

/** @typedef {import('./studio/profile.js').VideoEncoding} VideoEncoding */

export class PublishConnection {
  /**
   * @param {object} opts
   * @param {(msg: {type: string, [key: string]: any}) => boolean} opts.send
   * @param {() => RTCIceServer[]} opts.iceServers
   * @param {(track: MediaStreamTrack | null) => VideoEncoding} opts.videoEncoding the live video's
   *   bitrate cap (and scale-down) for the camera track being sent
   * @param {() => void} opts.onConnected media flows (ICE connected after the answer)
   * @param {() => void} opts.onFailed the connection failed: publish again
   * @param {() => void} opts.onUnstable the connection is disconnected, maybe for a moment
   */
  constructor({ send, iceServers, videoEncoding, onConnected, onFailed, onUnstable }) {
    this.send = send;
    this.iceServers = iceServers;
    this.videoEncoding = videoEncoding;
    this.onConnected = onConnected;
    this.onFailed = onFailed;
    this.onUnstable = onUnstable;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
  }

  /** @returns {RTCRtpSender[]} */
  senders() {
    return this.pc?.getSenders() ?? [];
  }

  /**
   * Offer this stream.
   * @param {MediaStream} stream
   * @returns {Promise<RTCPeerConnection | null>} the connection once `publish` is sent; null if
   *   it was closed while ICE gathered
   */
  async start(stream) {
    const pc = new RTCPeerConnection(connectionConfig(this.iceServers()));
    this.pc = pc;
    const audio = pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
    const videoTrack = stream.getVideoTracks()[0];
    const video = pc.addTransceiver(videoTrack, {
      direction: 'sendonly',
      streams: [stream],
      sendEncodings: [{ ...this.videoEncoding(videoTrack) }],
    });
    preferCodecs(audio, 'audio', ['audio/opus']);
    preferCodecs(video, 'video', ['video/vp8', 'video/rtx']);

    const onChange = () => this._check(pc);
    pc.addEventListener('connectionstatechange', onChange);
    pc.addEventListener('iceconnectionstatechange', onChange);

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    if (this.pc !== pc) return null; // closed while gathering
    this.send({ type: 'publish', sdp: pc.localDescription?.sdp });
    return pc;
  }

  /**
   * Apply the server's `publish_answer`.
   * @param {string} sdp
   */
  async answer(sdp) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await this.applyEncoding();
    this._check(pc); // ICE may already be up
  }

  /**
   * Set the video encoding on the sender. The relay forwards our packets as they are, so the cap
   * (and a studio room's scale-down) must be set here, at the source; again after a camera
   * switch, since the new camera's size may differ.
   */
  async applyEncoding() {
    const sender = this.pc?.getSenders().find((s) => s.track?.kind === 'video');
    if (!sender) return;
    const params = sender.getParameters();
    if (!params.encodings?.length) params.encodings = [{}];
    Object.assign(params.encodings[0], this.videoEncoding(sender.track));
    await sender.setParameters(params).catch(() => {});
  }

  close() {
    this.pc?.close();
    this.pc = null;
  }

  /**
   * Connected once the connection is (or its ICE is, after the answer was applied).
   * @param {RTCPeerConnection} pc
   */
  _check(pc) {
    if (this.pc !== pc) return;
    const ice = pc.iceConnectionState;
    if (pc.connectionState === 'connected' || (pc.remoteDescription && (ice === 'connected' || ice === 'completed'))) {
      this.onConnected();
    } else if (pc.connectionState === 'failed') {
      this.onFailed();
    } else if (pc.connectionState === 'disconnected') {
      this.onUnstable();
    }
  }
}
