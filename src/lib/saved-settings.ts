// Settings that survive a reload: the prompt form and the X/Y plot's axes, in
// localStorage (small, synchronous, read before the first render). Never the
// Hub token: the model picker keeps that on its own terms.

export const FORM_KEY = 'sd3-webgpu.form';
export const XY_KEY = 'sd3-webgpu.xy';

/** The saved object, or null when there is none or it is not ours (private mode, a hand edit). */
export function loadSaved(key: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(key) ?? 'null');
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function save(key: string, value: object): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or disabled: the settings just do not outlive the page */
  }
}

/** A saved field of the right type, else the fallback. */
export const str = (v: unknown, fallback: string) => (typeof v === 'string' ? v : fallback);
export const numOrNull = (v: unknown, fallback: number | null) => (v === null || (typeof v === 'number' && Number.isFinite(v)) ? v : fallback);
