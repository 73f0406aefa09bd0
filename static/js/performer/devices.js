// @ts-check
/**
 * The performer's own camera and microphone: getUserMedia with the server's capture settings,
 * the local preview and level meter, the device lists, and switching a device mid-scene (on the
 * live sender too).
 */
import { h } from '../common/dom.js';
import { getLocalMedia, getTrack, listDevices } from '../common/media.js';
import { LevelMeter } from '../common/meter.js';
import { ui } from './view.js';

/** @typedef {import('../common/media.js').MediaConfig} MediaConfig */

/**
 * @param {HTMLSelectElement} select
 * @param {MediaDeviceInfo[]} devices
 * @param {string | undefined} selected
 * @param {string} fallback label prefix when the browser hides labels
 */
function fillSelect(select, devices, selected, fallback) {
  select.replaceChildren(...devices.map((d, i) => h('option', {
    value: d.deviceId,
    textContent: d.label || `${fallback} ${i + 1}`,
    selected: d.deviceId === selected,
  })));
  select.disabled = devices.length === 0;
}

/**
 * The message for a getUserMedia failure.
 * @param {DOMException} e
 * @returns {string}
 */
function mediaError(e) {
  if (e.name === 'NotAllowedError' || e.name === 'SecurityError') return 'Camera or microphone access was denied';
  if (e.name === 'NotFoundError') return 'No camera or microphone was found';
  if (e.name === 'NotReadableError') return 'The camera or microphone is in use by another application';
  return `Could not start camera or microphone: ${e.message || e.name}`;
}

export class LocalMedia {
  /**
   * @param {object} opts
   * @param {() => MediaConfig} opts.config the server's capture settings
   * @param {() => boolean} opts.wanted false once the page moved on (left, failed)
   * @param {() => RTCRtpSender[]} opts.senders the publish connection's senders, if any
   * @param {(stream: MediaStream, started: boolean) => void} opts.onCapture the stream started
   *   or one of its tracks changed: report the capture settings, refresh the controls
   * @param {(text: string) => void} opts.onStatus
   * @param {(text: string) => void} opts.onError getUserMedia failed for good
   * @param {() => void} opts.onChange readiness changed (a device went away)
   */
  constructor({ config, wanted, senders, onCapture, onStatus, onError, onChange }) {
    this.config = config;
    this.wanted = wanted;
    this.senders = senders;
    this.onCapture = onCapture;
    this.onStatus = onStatus;
    this.onError = onError;
    this.onChange = onChange;
    /** @type {MediaStream | null} */
    this.stream = null;
    /** @type {Promise<void> | null} a getUserMedia in flight */
    this.pending = null;
    /** @type {LevelMeter | null} */
    this.meter = null;
    /** @type {{audio?: string, video?: string}} chosen device ids */
    this.devices = {};
  }

  /** @returns {number} local microphone RMS level 0..1 */
  get level() {
    return this.meter?.level ?? 0;
  }

  /** Camera and microphone both live. */
  ready() {
    const s = this.stream;
    return !!s && s.getAudioTracks().length > 0 && s.getVideoTracks().length > 0
      && s.getTracks().every((t) => t.readyState === 'live');
  }

  /** Start camera and microphone (once, however many ask meanwhile). */
  start() {
    if (!this.pending) {
      this.pending = this._acquire().finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    ui.localVideo.srcObject = null;
    this.meter?.setStream(null);
  }

  async _acquire() {
    let stream;
    try {
      stream = await getLocalMedia(this.config(), { audioDeviceId: this.devices.audio, videoDeviceId: this.devices.video });
    } catch (err) {
      const e = /** @type {DOMException} */ (err);
      if (e.name === 'OverconstrainedError' && (this.devices.audio || this.devices.video)) {
        // A remembered device went away: fall back to the defaults once.
        this.devices = {};
        return this._acquire();
      }
      this.onError(mediaError(e));
      return;
    }
    if (!this.wanted()) {
      stream.getTracks().forEach((t) => t.stop()); // the page moved on while we waited
      return;
    }
    this.stream = stream;
    ui.localVideo.srcObject = stream;
    this._watchTracks(stream);
    if (!this.meter) this.meter = new LevelMeter(ui.levelMeter);
    this.meter.setStream(stream);
    await this.fillDeviceLists();
    this.onCapture(stream, true);
  }

  /** @param {MediaStream} stream */
  _watchTracks(stream) {
    for (const track of stream.getTracks()) {
      track.onended = () => {
        if (this.stream?.getTracks().includes(track)) {
          this.onStatus(`Your ${track.kind === 'audio' ? 'microphone' : 'camera'} stopped. Pick another device.`);
          this.onChange();
        }
      };
    }
  }

  async fillDeviceLists() {
    let lists;
    try {
      lists = await listDevices();
    } catch {
      return;
    }
    const current = {
      audio: this.stream?.getAudioTracks()[0]?.getSettings().deviceId,
      video: this.stream?.getVideoTracks()[0]?.getSettings().deviceId,
    };
    fillSelect(ui.camera, lists.cameras, current.video, 'Camera');
    fillSelect(ui.mic, lists.microphones, current.audio, 'Microphone');
  }

  /**
   * Switch one device; when already publishing, swap the track on the live sender.
   * @param {'audio' | 'video'} kind
   * @param {string} deviceId
   */
  async switchDevice(kind, deviceId) {
    const stream = this.stream;
    if (!stream || !deviceId) return;
    this.devices[kind] = deviceId;
    const old = kind === 'audio' ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    // Many cameras cannot be opened twice: release the old one first.
    if (kind === 'video') old?.stop();
    let track;
    try {
      track = await getTrack(kind, this.config(), deviceId);
    } catch (err) {
      this.onStatus(`Could not switch ${kind === 'audio' ? 'microphone' : 'camera'}: ${/** @type {Error} */ (err).message}`);
      delete this.devices[kind];
      if (kind === 'video') track = await getTrack(kind, this.config(), '').catch(() => undefined);
      if (!track) { this.onChange(); return; }
    }
    if (this.stream !== stream) { track.stop(); return; } // left meanwhile
    if (old) { old.stop(); stream.removeTrack(old); }
    stream.addTrack(track);
    this._watchTracks(stream);
    if (kind === 'audio') this.meter?.setStream(stream);
    else ui.localVideo.srcObject = stream;
    const sender = this.senders().find((s) => s.track === old || s.track?.kind === kind);
    await sender?.replaceTrack(track);
    this.onCapture(stream, false);
  }
}
