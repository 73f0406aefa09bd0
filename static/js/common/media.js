// @ts-check
/**
 * Local media: getUserMedia with the server's capture settings, device lists and the `capture`
 * report (the browser's capture settings, for the recorder). The level meter: meter.js.
 */

/**
 * @typedef {{width: number, height: number, frame_rate: number, max_video_bitrate: number,
 *   audio?: AudioProcessing}} MediaConfig `audio` absent: all three switches on (standard capture)
 * @typedef {{echoCancellation: boolean, noiseSuppression: boolean, autoGainControl: boolean}} AudioProcessing
 */

/** @type {MediaConfig} */
export const DEFAULT_MEDIA = { width: 640, height: 480, frame_rate: 30, max_video_bitrate: 1_200_000 };

/**
 * Merge the server's `welcome.media` over the defaults.
 * @param {Partial<MediaConfig> | undefined} media
 * @returns {MediaConfig}
 */
export function mediaConfig(media) {
  const out = { ...DEFAULT_MEDIA };
  for (const key of /** @type {Exclude<keyof MediaConfig, 'audio'>[]} */ (Object.keys(DEFAULT_MEDIA))) {
    const v = media?.[key];
    if (typeof v === 'number' && v > 0) out[key] = v;
  }
  return out;
}

/** The browser's voice processing, on unless a capture profile says otherwise. */
const VOICE_PROCESSING = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/**
 * @param {MediaConfig} media
 * @param {string} [deviceId]
 * @returns {MediaTrackConstraints}
 */
function audioConstraints(media, deviceId) {
  /** @type {MediaTrackConstraints} */
  const c = { ...VOICE_PROCESSING, ...media.audio };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}

/**
 * @param {MediaConfig} media
 * @param {string} [deviceId]
 * @returns {MediaTrackConstraints}
 */
function videoConstraints(media, deviceId) {
  /** @type {MediaTrackConstraints} */
  const c = {
    width: { ideal: media.width },
    height: { ideal: media.height },
    frameRate: { ideal: media.frame_rate },
  };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}

/**
 * Camera and microphone in one stream.
 * @param {MediaConfig} media
 * @param {{audioDeviceId?: string, videoDeviceId?: string}} [devices]
 * @returns {Promise<MediaStream>}
 */
export function getLocalMedia(media, devices = {}) {
  return navigator.mediaDevices.getUserMedia({
    audio: audioConstraints(media, devices.audioDeviceId),
    video: videoConstraints(media, devices.videoDeviceId),
  });
}

/**
 * One new track of `kind` from a given device (for a device switch).
 * @param {'audio' | 'video'} kind
 * @param {MediaConfig} media
 * @param {string} deviceId
 * @returns {Promise<MediaStreamTrack>}
 */
export async function getTrack(kind, media, deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia(
    kind === 'audio' ? { audio: audioConstraints(media, deviceId) } : { video: videoConstraints(media, deviceId) },
  );
  return stream.getTracks()[0];
}

/**
 * Cameras and microphones (labels are only filled once permission was granted).
 * @returns {Promise<{cameras: MediaDeviceInfo[], microphones: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: all.filter((d) => d.kind === 'videoinput'),
    microphones: all.filter((d) => d.kind === 'audioinput'),
  };
}

/**
 * The body of a `capture` message: what the browser actually applied, for the recorder.
 * @param {MediaStream} stream
 * @returns {{type: 'capture', user_agent: string, audio_processing: object, video_settings: object}}
 */
export function captureReport(stream) {
  const a = stream.getAudioTracks()[0]?.getSettings() ?? {};
  const v = stream.getVideoTracks()[0]?.getSettings() ?? {};
  return {
    type: 'capture',
    user_agent: navigator.userAgent,
    audio_processing: {
      echoCancellation: a.echoCancellation ?? null,
      noiseSuppression: a.noiseSuppression ?? null,
      autoGainControl: a.autoGainControl ?? null,
      sampleRate: a.sampleRate ?? null,
      channelCount: a.channelCount ?? null,
      deviceId: a.deviceId ?? null,
    },
    // Copy the plain fields: MediaTrackSettings is a dictionary, but be explicit about what goes out.
    video_settings: Object.fromEntries(
      Object.entries(v).filter(([, val]) => ['string', 'number', 'boolean'].includes(typeof val)),
    ),
  };
}
