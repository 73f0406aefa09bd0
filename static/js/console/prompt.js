// @ts-check
/**
 * Prompt form: text, target emotion (free text with suggestions) and intensity 0..1 ->
 * POST /api/v1/rooms/{id}/prompt; shown on every performer page and logged in the take list.
 */
import { api, seg } from './api.js';

export class PromptForm {
  /**
   * @param {{form: HTMLFormElement, text: HTMLInputElement | HTMLTextAreaElement,
   *   emotion: HTMLInputElement | HTMLSelectElement, intensity: HTMLInputElement,
   *   intensityOut: HTMLElement, send: HTMLButtonElement, roomId: () => string | null,
   *   takes: import('./takes.js').TakeList, notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ form, text, emotion, intensity, intensityOut, send, roomId, takes, notify }) {
    this.text = text;
    this.emotion = emotion;
    this.intensity = intensity;
    this.intensityOut = intensityOut;
    this.sendBtn = send;
    this.roomId = roomId;
    this.takes = takes;
    this.notify = notify;
    this.busy = false;
    const showIntensity = () => { intensityOut.textContent = Number(intensity.value).toFixed(2); };
    intensity.addEventListener('input', showIntensity);
    showIntensity();
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.submit();
    });
    text.addEventListener('keydown', (ev) => {
      // In a textarea, Enter sends and Shift+Enter starts a new line.
      if (text instanceof HTMLTextAreaElement && ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      }
    });
    text.addEventListener('input', () => this.update());
  }

  update() {
    this.sendBtn.disabled = this.busy || !this.roomId() || !this.text.value.trim();
    this.text.disabled = !this.roomId();
  }

  async submit() {
    const roomId = this.roomId();
    const text = this.text.value.trim();
    if (!roomId || !text || this.busy) return;
    /** @type {{text: string, target_emotion?: string, intensity: number}} */
    const body = { text, intensity: Math.round(Number(this.intensity.value) * 100) / 100 };
    const emotion = this.emotion.value.trim();
    if (emotion) body.target_emotion = emotion;
    this.busy = true;
    this.update();
    try {
      const res = await api(`/api/v1/rooms/${seg(roomId)}/prompt`, { method: 'POST', body });
      if (roomId === this.roomId()) this.takes.addPrompt({ t_s: null, ...body, ...(res ?? {}) });
      if (this.text.value.trim() === text) this.text.value = '';
    } catch (err) {
      this.notify(`Could not send the prompt: ${/** @type {Error} */ (err).message}`, 'error');
    } finally {
      this.busy = false;
      this.update();
    }
  }
}
