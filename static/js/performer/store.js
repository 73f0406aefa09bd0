// @ts-check
/**
 * What survives a reload in this tab's sessionStorage: the invite (the link's fragment is removed
 * from the address bar), and the resume value, keyed by performer id as the server hands it out.
 */

export const store = {
  /** @returns {string | null} */
  readInvite() {
    const params = new URLSearchParams(location.hash.slice(1));
    const fromLink = params.get('invite');
    if (fromLink) {
      // A new link replaces whatever this tab held before.
      if (fromLink !== sessionStorage.getItem('improv.invite')) {
        sessionStorage.removeItem('improv.performer');
        sessionStorage.removeItem('improv.joined');
      }
      sessionStorage.setItem('improv.invite', fromLink);
      history.replaceState(null, '', location.pathname + location.search);
      return fromLink;
    }
    return sessionStorage.getItem('improv.invite');
  },
  /** @returns {string | null} */
  resume() {
    const pid = sessionStorage.getItem('improv.performer');
    return pid ? sessionStorage.getItem(`improv.resume.${pid}`) : null;
  },
  /** @param {string} performerId @param {string | null | undefined} resume */
  saveResume(performerId, resume) {
    sessionStorage.setItem('improv.performer', performerId);
    if (resume) sessionStorage.setItem(`improv.resume.${performerId}`, resume);
  },
  forgetResume() {
    const pid = sessionStorage.getItem('improv.performer');
    if (pid) sessionStorage.removeItem(`improv.resume.${pid}`);
    sessionStorage.removeItem('improv.joined');
  },
  /** @param {boolean} on */
  setJoined(on) {
    if (on) sessionStorage.setItem('improv.joined', '1');
    else sessionStorage.removeItem('improv.joined');
  },
  wasJoined() {
    return sessionStorage.getItem('improv.joined') === '1';
  },
};
