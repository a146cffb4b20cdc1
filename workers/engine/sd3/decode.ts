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

/** A's last `extent` rows fade into b's first ones (diffusers' blend_v); b changes in place. Tensors are [3, h, w]. */
function blendRows(a: Float32Array, ah: number, b: Float32Array, bh: number, w: number, extent: number): void {
  const n = Math.min(ah, bh, extent);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < n; y++) {
      const t = y / extent;
      const ar = (c * ah + ah - extent + y) * w;
      const br = (c * bh + y) * w;
      for (let x = 0; x < w; x++) b[br + x] = a[ar + x] * (1 - t) + b[br + x] * t;
    }
  }
}

/** The same across columns (diffusers' blend_h). */
function blendColumns(a: Float32Array, aw: number, b: Float32Array, bw: number, h: number, extent: number): void {
  const n = Math.min(aw, bw, extent);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < h; y++) {
      const ar = (c * h + y) * aw + aw - extent;
      const br = (c * h + y) * bw;
      for (let x = 0; x < n; x++) {
        const t = x / extent;
        b[br + x] = a[ar + x] * (1 - t) + b[br + x] * t;
      }
    }
  }
}

/**
 * Decodes one image in overlapping latent tiles of at most `tile` x `tile`
 * (a quarter overlap), blending each tile's top and left edges into its
 * neighbours' and keeping its top-left part: diffusers' tiled_decode. Memory
 * is one tile's, whatever the image size; the result differs from a whole
 * decode only near the seams, by a few levels.
 */
export async function decodeTiled(model: LoadedModel, ort: Ort, latents: Float32Array, latentH: number, latentW: number, tile: number): Promise<Uint8ClampedArray> {
  const { latentChannels: C, scalingFactor, shiftFactor, scaleFactor: f } = model.vaeConfig;
  const z = unscaleLatents(latents, scalingFactor, shiftFactor);
  const overlap = Math.floor(tile / 4);
  const stride = tile - overlap;
  const blend = overlap * f;
  const keep = stride * f; // each tile's own part, in pixels
  const H = latentH * f;
  const W = latentW * f;
  const rows: { data: Float32Array; h: number; w: number }[][] = [];
  for (let i = 0; i < latentH; i += stride) {
    const row: { data: Float32Array; h: number; w: number }[] = [];
    for (let j = 0; j < latentW; j += stride) {
      const th = Math.min(tile, latentH - i);
      const tw = Math.min(tile, latentW - j);
      const part = new Float32Array(C * th * tw);
      for (let c = 0; c < C; c++) for (let y = 0; y < th; y++) part.set(z.subarray((c * latentH + i + y) * latentW + j, (c * latentH + i + y) * latentW + j + tw), (c * th + y) * tw);
      const out = await model.vaeDecoder.run({ latent_sample: new ort.Tensor('float32', part, [1, C, th, tw]) });
      row.push({ data: (out.sample.data as Float32Array).slice(), h: th * f, w: tw * f });
      for (const t of Object.values(out)) t.dispose();
      if (j + tile >= latentW) break;
    }
    rows.push(row);
    if (i + tile >= latentH) break;
  }
  const image = new Float32Array(3 * H * W);
  rows.forEach((row, r) =>
    row.forEach((t, c) => {
      if (r > 0) blendRows(rows[r - 1][c].data, rows[r - 1][c].h, t.data, t.h, t.w, blend);
      if (c > 0) blendColumns(row[c - 1].data, row[c - 1].w, t.data, t.w, t.h, blend);
      const y0 = r * keep;
      const x0 = c * keep;
      const h = Math.min(t.h, H - y0, r === rows.length - 1 ? t.h : keep);
      const w = Math.min(t.w, W - x0, c === row.length - 1 ? t.w : keep);
      for (let ch = 0; ch < 3; ch++) for (let y = 0; y < h; y++) image.set(t.data.subarray((ch * t.h + y) * t.w, (ch * t.h + y) * t.w + w), (ch * H + y0 + y) * W + x0);
    }),
  );
  return chwToRgba(image, W, H);
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
