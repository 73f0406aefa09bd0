// @ts-check
/**
 * What every RTCPeerConnection of the pages shares: the configuration, and non-trickle ICE
 * (the server takes one SDP with every candidate in it, so we wait for gathering to finish).
 */

/** Longest wait for ICE gathering; after it we send the candidates we have. */
export const GATHER_TIMEOUT_MS = 3000;

/**
 * @param {RTCIceServer[]} iceServers the server's `welcome.ice_servers`
 * @returns {RTCConfiguration}
 */
export function connectionConfig(iceServers) {
  return { iceServers, bundlePolicy: 'max-bundle' };
}

/**
 * Resolve when ICE gathering is complete, or after `ms` (then send what we have).
 * @param {RTCPeerConnection} pc
 * @param {number} [ms]
 * @returns {Promise<void>}
 */
export function gatheringDone(pc, ms = GATHER_TIMEOUT_MS) {
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
