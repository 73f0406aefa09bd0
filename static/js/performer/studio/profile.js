// @ts-check
/**
 * The room's capture profile as the page reads it from `welcome.profile`. A studio profile (one
 * with an `hq` section) captures at full quality without voice processing, sends the call scaled
 * down, and records a high-quality copy locally. Anything else, including a welcome without a
 * profile (an older server), is today's standard capture, unchanged.
 */
import { mediaConfig } from '../../common/media.js';

/**
 * @typedef {import('../../common/media.js').MediaConfig} MediaConfig
 * @typedef {{width?: number, height?: number, frame_rate?: number, echo_cancellation?: boolean,
 *   noise_suppression?: boolean, auto_gain_control?: boolean}} CaptureSection
 * @typedef {{width?: number, height?: number, max_video_bitrate?: number}} LiveSection
 * @typedef {{mime_type?: string, video_bitrate?: number, audio_bitrate?: number, chunk_s?: number,
 *   max_chunk_bytes?: number, upload_deadline_s?: number}} HqSection
 * @typedef {{name?: string, capture?: CaptureSection, live?: LiveSection, hq?: HqSection | null}} Profile
 * @typedef {{maxBitrate: number, scaleResolutionDownBy?: number}} VideoEncoding
 */

/**
 * @param {any} v
 * @param {number} fallback
 * @returns {number}
 */
function positive(v, fallback) {
  return typeof v === 'number' && v > 0 ? v : fallback;
}

/**
 * The welcome's profile if it is a studio one (records a high-quality copy), else null.
 * @param {any} welcome
 * @returns {Profile | null}
 */
export function studioProfile(welcome) {
  const profile = welcome?.profile;
  return profile && typeof profile === 'object' && profile.hq && typeof profile.hq === 'object' ? profile : null;
}

/**
 * What getUserMedia asks for: the studio profile's capture section, or today's `welcome.media`.
 * @param {any} welcome
 * @returns {MediaConfig}
 */
export function captureConfig(welcome) {
  const base = mediaConfig(welcome?.media);
  const profile = studioProfile(welcome);
  if (!profile) return base;
  const c = profile.capture ?? {};
  return {
    ...base,
    width: positive(c.width, 1280),
    height: positive(c.height, 720),
    frame_rate: positive(c.frame_rate, 30),
    audio: {
      echoCancellation: c.echo_cancellation === true,
      noiseSuppression: c.noise_suppression === true,
      autoGainControl: c.auto_gain_control === true,
    },
  };
}

/**
 * Does this room record the microphone without echo cancellation (the performer needs headphones)?
 * @param {any} welcome
 * @returns {boolean}
 */
export function needsHeadphones(welcome) {
  return captureConfig(welcome).audio?.echoCancellation === false;
}

/**
 * The live call's video encoding. Standard: the bitrate cap of `welcome.media`, as always. Studio:
 * the camera's picture scaled down to the profile's live size (by height, never up) and the live
 * bitrate cap, so that the full-quality capture does not cost the call bandwidth.
 * @param {any} welcome
 * @param {MediaStreamTrack | null | undefined} track the camera track being sent
 * @returns {VideoEncoding}
 */
export function liveEncoding(welcome, track) {
  const media = mediaConfig(welcome?.media);
  const profile = studioProfile(welcome);
  if (!profile) return { maxBitrate: media.max_video_bitrate };
  const live = profile.live ?? {};
  const liveHeight = positive(live.height, media.height);
  const captured = positive(track?.getSettings().height, captureConfig(welcome).height);
  return {
    maxBitrate: positive(live.max_video_bitrate, media.max_video_bitrate),
    scaleResolutionDownBy: Math.max(1, captured / liveHeight),
  };
}
