// Image to image and inpainting, as diffusers' StableDiffusion3Img2ImgPipeline
// and StableDiffusion3InpaintPipeline compute them (float32, like torch on
// CPU: every product and sum rounded to float32):
//   - the image goes through the VAE encoder, its latent is drawn from the
//     posterior with the request's RNG and shifted and scaled for the
//     transformer: (mean + exp(0.5 logvar) eps - shift) * scale;
//   - the schedule starts int(steps - steps * strength) steps in (get_timesteps),
//     and the first latents are scale_noise(init, sigma_start, noise);
//   - to inpaint, after every step the region kept is put back from the clean
//     latents noised to the next sigma (after the last step, sigma 0: the
//     clean latents themselves).
import type { NormalizedRequest } from '../api/types.ts';
import { decodeImageFile, type Pixels } from '../image/pixels.ts';
import { cropRegion, maskToLatent, preprocessImage, preprocessMask, type PreprocessOptions, type Region } from '../image/vae-image-processor.ts';
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';

const f32 = Math.fround;

/** What an image request brings beside its prompt, made ready when it is submitted (bad files are refused then). */
export interface ImageInput {
  /** The init image at the request's size, [3, H, W] in [-1, 1], for the VAE encoder; dropped once encoded. */
  pixels: Float32Array | null;
  /** Inpainting: the mask at latent size, one plane (1 repaint, 0 keep); null for image to image. */
  latentMask: Float32Array | null;
  /** padding_mask_crop: the original image and mask, and the region that was cut out; the result is composited back into the original. */
  overlay: { image: Pixels; mask: Pixels; region: Region } | null;
}

/**
 * Decodes and preprocesses a request's image and mask as the SD3 pipelines
 * do: the image (and mask) resized to the request's size, or with
 * padding_mask_crop the mask's padded box cut out and fitted ('fill'); the
 * mask binarized and taken to latent size by nearest.
 */
export function prepareImageInput(req: NormalizedRequest, latentW: number, latentH: number): ImageInput | null {
  if (!req.image) return null;
  const { width, height } = req;
  const image = decodeImageFile(req.image, 'image');
  const mask = req.mask ? decodeImageFile(req.mask, 'mask') : null;
  const region = mask && req.paddingMaskCrop !== undefined ? cropRegion(mask, width, height, req.paddingMaskCrop) : null;
  const opts: PreprocessOptions = region ? { resizeMode: 'fill', crop: region } : {};
  return {
    pixels: preprocessImage(image, width, height, opts),
    latentMask: mask ? maskToLatent(preprocessMask(mask, width, height, opts), width, height, latentW, latentH) : null,
    overlay: mask && region ? { image, mask, region } : null,
  };
}

/** Inpainting's region kept: the clean init latents, the noise they are noised with, and the latent mask. */
export interface KnownRegion {
  init: Float32Array;
  noise: Float32Array;
  mask: Float32Array;
}

/**
 * The first latents of an image request from its encoder output, with the
 * request's draws in the engine's order (the noise first, as text to image
 * draws it, then the posterior's eps); `sigma` is the schedule's first.
 */
export function startLatents(params: Float32Array, draw: (n: number) => Float32Array, latentShape: readonly [number, number, number], sigma: number, vae: { shiftFactor: number; scalingFactor: number }, mask: Float32Array | null): { latents: Float32Array; known: KnownRegion | null } {
  const [C, h, w] = latentShape;
  const n = C * h * w;
  const noise = draw(n);
  const eps = params.length === 2 * n ? draw(n) : null;
  if (!eps && params.length !== n) throw new Error(`the VAE encoder gave ${params.length} values; expected ${2 * n} (mean and log-variance) or ${n}`);
  const init = imageLatents(params, C, h * w, eps, vae.shiftFactor, vae.scalingFactor);
  return { latents: scaleNoise(init, noise, sigma), known: mask ? { init, noise, mask } : null };
}

/** Where the schedule starts for a strength (diffusers' get_timesteps, order 1): int(max(steps - min(steps * strength, steps), 0)). */
export function strengthStart(steps: number, strength: number): number {
  return Math.trunc(Math.max(steps - Math.min(steps * strength, steps), 0));
}

/** scale_noise: sigma * noise + (1 - sigma) * sample, into `out` (may alias `sample`). */
export function scaleNoise(sample: Float32Array, noise: Float32Array, sigma: number, out: Float32Array = new Float32Array(sample.length)): Float32Array {
  const s = f32(sigma);
  const keep = f32(1 - s);
  for (let i = 0; i < sample.length; i++) out[i] = f32(s * noise[i]) + f32(keep * sample[i]);
  return out;
}

/**
 * The transformer's latents for an encoded image. The encoder gives the
 * posterior's mean and log-variance (2C channels: diffusers' latent_dist,
 * sampled with `eps`), or latents already (C channels: used as they are, and
 * `eps` is not drawn). Then (z - shift_factor) * scaling_factor.
 */
export function imageLatents(params: Float32Array, channels: number, plane: number, eps: Float32Array | null, shiftFactor: number, scalingFactor: number): Float32Array {
  const n = channels * plane;
  const out = new Float32Array(n);
  const shift = f32(shiftFactor);
  const scale = f32(scalingFactor);
  const posterior = params.length === 2 * n;
  for (let i = 0; i < n; i++) {
    let z = params[i];
    if (posterior) {
      const logvar = Math.min(20, Math.max(-30, params[n + i]));
      const std = f32(Math.exp(f32(0.5 * logvar)));
      z = f32(z + f32(std * eps![i]));
    }
    out[i] = f32(f32(z - shift) * scale);
  }
  return out;
}

/** Inpainting's step: latents = (1 - mask) * scale_noise(init, sigma, noise) + mask * latents, in place; the mask is one plane (0 keep, 1 repaint) for every channel. */
export function blendKnown(latents: Float32Array, init: Float32Array, noise: Float32Array, mask: Float32Array, sigma: number): void {
  const plane = mask.length;
  const s = f32(sigma);
  const keep = f32(1 - s);
  for (let i = 0; i < latents.length; i++) {
    const m = mask[i % plane];
    const known = f32(f32(s * noise[i]) + f32(keep * init[i]));
    latents[i] = f32(f32(f32(1 - m) * known) + f32(m * latents[i]));
  }
}

/** Same-size images ([3, H, W] in [-1, 1] each) through the VAE encoder in one run: each image's output (2C or C channels at latent size). */
export async function encodeImages(model: LoadedModel, ort: Ort, pixels: readonly Float32Array[], height: number, width: number): Promise<Float32Array[]> {
  const encoder = model.vaeEncoder;
  if (!encoder) throw new Error('the model has no VAE encoder');
  const per = 3 * height * width;
  const x = new Float32Array(per * pixels.length);
  pixels.forEach((p, i) => x.set(p, i * per));
  const out = await encoder.run({ sample: new ort.Tensor('float32', x, [pixels.length, 3, height, width]) });
  const params = out.latent_parameters;
  const data = params.data as Float32Array;
  const each = data.length / pixels.length;
  const results = pixels.map((_, i) => data.slice(i * each, (i + 1) * each));
  for (const t of Object.values(out)) t.dispose();
  return results;
}
