// Aspect presets mapped to the sizes a model allows: about the area of its
// default square, each side a multiple of its size step, within its limits.

export const ASPECTS = [
  { label: '1:1', w: 1, h: 1 },
  { label: '3:2', w: 3, h: 2 },
  { label: '2:3', w: 2, h: 3 },
  { label: '16:9', w: 16, h: 9 },
  { label: '9:16', w: 9, h: 16 },
] as const;

export type AspectLabel = (typeof ASPECTS)[number]['label'];

export interface SizeLimits {
  minSize: number;
  maxSize: number;
  sizeMultiple: number;
}

/** Width and height for an aspect at about `side`² pixels (the model's default size). */
export function sizeForAspect(label: AspectLabel, side: number, limits: SizeLimits): { width: number; height: number } {
  const a = ASPECTS.find((x) => x.label === label)!;
  const r = Math.sqrt(a.w / a.h);
  const fit = (v: number) => Math.min(limits.maxSize - (limits.maxSize % limits.sizeMultiple), Math.max(limits.minSize, Math.round(v / limits.sizeMultiple) * limits.sizeMultiple));
  return { width: fit(side * r), height: fit(side / r) };
}

/** The preset a size is, if any. */
export function aspectOf(width: number, height: number, side: number, limits: SizeLimits): AspectLabel | null {
  for (const a of ASPECTS) {
    const s = sizeForAspect(a.label, side, limits);
    if (s.width === width && s.height === height) return a.label;
  }
  return null;
}
