// From latents to pixels: unscale for the VAE, decode, map [-1, 1] to RGBA bytes.
import { encode as encodePng } from 'fast-png';
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';

/** z = latents / scaling_factor + shift_factor, as the VAE expects. */
export function unscaleLatents(latents: Float32Array, scalingFactor: number, shiftFactor: number, out = new Float32Array(latents.length)): Float32Array {
  for (let i = 0; i < latents.length; i++) out[i] = latents[i] / scalingFactor + shiftFactor;
  return out;
}

/** CHW floats in [-1, 1] to RGBA bytes: clamp(x / 2 + 0.5, 0, 1) * 255, rounded. */
export function chwToRgba(chw: Float32Array, width: number, height: number): Uint8ClampedArray {
  const plane = width * height;
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(0, chw[c * plane + i] / 2 + 0.5));
      rgba[i * 4 + c] = Math.round(v * 255);
    }
    rgba[i * 4 + 3] = 255;
  }
  return rgba;
}

/** Decodes same-size latents in one VAE run; returns one RGBA image per latent. */
export async function decodeLatents(model: LoadedModel, ort: Ort, latents: readonly Float32Array[], latentH: number, latentW: number): Promise<Uint8ClampedArray[]> {
  const { latentChannels, scalingFactor, shiftFactor, scaleFactor } = model.vaeConfig;
  const per = latentChannels * latentH * latentW;
  const z = new Float32Array(per * latents.length);
  latents.forEach((l, i) => unscaleLatents(l, scalingFactor, shiftFactor, z.subarray(i * per, (i + 1) * per)));
  const out = await model.vaeDecoder.run({ latent_sample: new ort.Tensor('float32', z, [latents.length, latentChannels, latentH, latentW]) });
  const sample = out.sample;
  const data = sample.data as Float32Array;
  const H = latentH * scaleFactor;
  const W = latentW * scaleFactor;
  const images = latents.map((_, i) => chwToRgba(data.subarray(i * 3 * H * W, (i + 1) * 3 * H * W), W, H));
  for (const t of Object.values(out)) t.dispose();
  return images;
}

export function rgbaToPng(rgba: Uint8ClampedArray, width: number, height: number): Uint8Array {
  return encodePng({ width, height, data: new Uint8Array(rgba.buffer, rgba.byteOffset, rgba.byteLength), channels: 4, depth: 8 });
}

/**
 * A cheap preview without the VAE: the first three latent channels, each
 * normalised to its own range, at latent resolution.
 */
export function latentPreview(latents: Float32Array, channels: number, h: number, w: number): Uint8ClampedArray {
  const plane = h * w;
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let c = 0; c < 3 && c < channels; c++) {
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < plane; i++) {
      const v = latents[c * plane + i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min || 1;
    for (let i = 0; i < plane; i++) rgba[i * 4 + c] = ((latents[c * plane + i] - min) / span) * 255;
  }
  for (let i = 0; i < plane; i++) rgba[i * 4 + 3] = 255;
  return rgba;
}
