// Image to image and inpainting against diffusers' own StableDiffusion3Img2ImgPipeline
// and StableDiffusion3InpaintPipeline (tools/fixtures/make_real_exports.py ran them on
// the real-export fixtures' weights with the engine's draws): every case within 2 levels,
// through the engine on native onnxruntime, one at a time and mixed in one batch with
// text to image; the intermediates (init latents, first noised latents) to float32
// rounding; and what a model without a VAE encoder, or bad input, gets.
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode as encodePng } from 'fast-png';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, GenerateResult } from '../../workers/engine/api/types.ts';
import { sha256Hex } from '../../workers/engine/api/validate.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { InvalidRequestError, TooLargeError } from '../../workers/engine/errors.ts';
import { RESERVE_BYTES } from '../../workers/engine/memory/budget.ts';
import { peakBytes, requestFootprint } from '../../workers/engine/memory/footprint.ts';
import type { LoadedModel } from '../../workers/engine/model/load-model.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { parseA1111, readPngSettings } from '../../workers/engine/png/settings-chunks.ts';
import { RequestRng } from '../../workers/engine/rng.ts';
import { encodeImages, imageLatents, prepareImageInput, startLatents, strengthStart } from '../../workers/engine/sd3/image-to-image.ts';
import { normalizeRequest } from '../../workers/engine/api/validate.ts';
import { diffToRgb, expectedImageRgb, imageInput, imageReference, imageReferenceDir, REAL_EXPORTS_DIR as ROOT, type ImageCase, type ImageReference } from '../helpers/real-exports.ts';

const f32 = (file: string) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};
const maxAbs = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

/** The request diffusers' case ran. */
const requestOf = (r: ImageReference, c: ImageCase): GenerateRequest => ({
  prompt: r.prompt,
  negativePrompt: r.negativePrompt,
  seed: r.seed,
  steps: r.steps,
  guidance: r.guidance,
  width: r.width,
  height: r.height,
  image: imageInput(c.image),
  strength: c.strength,
  ...(c.mask ? { mask: imageInput(c.mask) } : {}),
  ...(c.paddingMaskCrop !== undefined ? { paddingMaskCrop: c.paddingMaskCrop } : {}),
});

const engines = new Map<string, Engine>();
async function engineFor(fixture: string): Promise<Engine> {
  let e = engines.get(fixture);
  if (!e) {
    e = createNodeEngine();
    await e.load({ kind: 'path', path: join(ROOT, fixture) });
    engines.set(fixture, e);
  }
  return e;
}
afterAll(async () => {
  for (const e of engines.values()) await e.unload();
});

describe.each([
  ['sd3', 'sd3'],
  ['sd3-fused', 'sd3'],
  ['sd35', 'sd35'],
])('%s: every img2img and inpaint case of diffusers', (fixture, ref) => {
  const r = imageReference(ref);
  it.each(r.cases.map((c) => [c.name, c] as const))('%s within 2 levels', async (_, c) => {
    const engine = await engineFor(fixture);
    const result = await engine.generate(requestOf(r, c));
    // padding_mask_crop pastes the 64x64 crop back into the whole 96x72 image
    expect([result.width, result.height]).toEqual(c.outputSize);
    expect(diffToRgb(result.rgba, expectedImageRgb(ref, c)), c.name).toBeLessThanOrEqual(2);
    expect(result.metadata.strength).toBe(c.strength);
  });

  it('the cases are not one picture: strength changes the image, and the mask keeps the unmasked part', async () => {
    const engine = await engineFor(fixture);
    const byName = new Map(r.cases.map((c) => [c.name, c]));
    const low = await engine.generate(requestOf(r, byName.get('img2img-s0.3')!));
    // against the strength-1.0 picture: far apart, so "within 2" above is not two flat images
    expect(diffToRgb(low.rgba, expectedImageRgb(ref, byName.get('img2img-s1')!))).toBeGreaterThan(20);
  });
});

describe('the intermediates, to float32 rounding', () => {
  it.each([['sd3'], ['sd35']])('%s: init latents from the encoder and the posterior, and the first noised latents', async (ref) => {
    const r = imageReference(ref);
    const engine = await engineFor(ref);
    const model = (engine as unknown as { loaded: LoadedModel }).loaded;
    const ort = (engine as unknown as { options: { ort: Parameters<typeof encodeImages>[1] } }).options.ort;
    for (const c of r.cases) {
      const req = normalizeRequest(requestOf(r, c), model.info, () => c.name, () => r.seed);
      const prepared = prepareImageInput(req, r.width / 8, r.height / 8)!;
      const [params] = await encodeImages(model, ort, [prepared.pixels!], r.height, r.width);
      expect(maxAbs(params, f32(join(imageReferenceDir(ref), r.encoded[c.encoded].latentParameters.file))), `${c.name} latent_parameters`).toBeLessThan(1e-4);
      // the schedule starts where get_timesteps says, and the first latents are scale_noise's at that sigma
      expect(strengthStart(r.steps, c.strength)).toBe(c.tStart);
      const rng = new RequestRng(r.seed);
      const start = startLatents(params, (n) => rng.normal(n), [16, r.height / 8, r.width / 8], c.firstSigma, model.vaeConfig, prepared.latentMask);
      const noise = new RequestRng(r.seed).normal(16 * 64);
      const eps = (() => {
        const g = new RequestRng(r.seed);
        g.normal(16 * 64);
        return g.normal(16 * 64);
      })();
      expect(maxAbs(imageLatents(params, 16, 64, eps, model.vaeConfig.shiftFactor, model.vaeConfig.scalingFactor), f32(join(imageReferenceDir(ref), r.encoded[c.encoded].initLatents.file)))).toBeLessThan(1e-4);
      expect(maxAbs(start.latents, f32(join(imageReferenceDir(ref), c.files.firstNoisedLatents.file))), `${c.name} first latents`).toBeLessThan(1e-4);
      if (c.files.maskLatents) {
        expect(Array.from(prepared.latentMask!)).toEqual(Array.from(f32(join(imageReferenceDir(ref), c.files.maskLatents.file))));
        expect(start.known!.noise).toEqual(noise);
      } else expect(start.known).toBeNull();
    }
  });
});

describe('requests of every kind in one batch', () => {
  it('a text to image, an img2img and an inpaint request share transformer runs and each matches diffusers', async () => {
    const r = imageReference('sd3');
    const byName = new Map(r.cases.map((c) => [c.name, c]));
    const engine = await engineFor('sd3');
    const runs = () => engine.status().stages?.stages.transformer?.runs ?? 0;
    const encodes = () => engine.status().stages?.stages.vaeEncode?.runs ?? 0;
    const before = { runs: runs(), encodes: encodes() };
    const img = byName.get('img2img-s0.6')!;
    const inp = byName.get('inpaint-s0.3')!;
    const [text, image, inpaint] = await Promise.all([
      // text to image from the same noise at 4 steps is diffusers' img2img at strength 1.0
      engine.generate({ prompt: r.prompt, negativePrompt: r.negativePrompt, seed: r.seed, steps: r.steps, guidance: r.guidance, width: 64, height: 64 }),
      engine.generate(requestOf(r, img)),
      engine.generate(requestOf(r, inp)),
    ]);

    expect(diffToRgb(text.rgba, expectedImageRgb('sd3', byName.get('img2img-s1')!))).toBeLessThanOrEqual(2);
    expect(diffToRgb(image.rgba, expectedImageRgb('sd3', img))).toBeLessThanOrEqual(2);
    expect(diffToRgb(inpaint.rgba, expectedImageRgb('sd3', inp))).toBeLessThanOrEqual(2);
    // 4 + 3 + 2 guided steps, their rows in one run per step while they overlap: 4 runs, the first two of all 6 rows
    expect(runs() - before.runs).toBe(4);
    expect(engine.status().maxRowsPerRun).toBe(6);
    expect([text, image, inpaint].map((x) => x.metadata.timings.stages!.transformerRuns)).toEqual([4, 3, 2]);
    // both images through the encoder in one run
    expect(encodes() - before.encodes).toBe(1);
  });
});

describe('what the image records', () => {
  it('strength and the input images by SHA-256 in the JSON, "Denoising strength" in the A1111 parameters, read back', async () => {
    const r = imageReference('sd3');
    const c = r.cases.find((x) => x.name === 'inpaint-s0.6')!;
    const engine = await engineFor('sd3');
    const result: GenerateResult = await engine.generate(requestOf(r, c));
    expect(result.metadata.image).toEqual({ sha256: await sha256Hex(imageInput(c.image)), width: 64, height: 64 });
    expect(result.metadata.mask).toEqual({ sha256: await sha256Hex(imageInput(c.mask!)), width: 64, height: 64 });
    const png = new Uint8Array(await result.png.arrayBuffer());
    const read = readPngSettings(png);
    expect(read.settings.strength).toBe(0.6);
    expect((read.json!.image as { sha256: string }).sha256).toBe(result.metadata.image!.sha256);
    // the A1111 chunk alone (as a dropped A1111 img2img PNG has it) fills strength too
    const a1111 = parseA1111(`${r.prompt}\nSteps: 4, Sampler: Euler, CFG scale: 3, Seed: 42, Size: 64x64, Denoising strength: 0.45`);
    expect(a1111.settings.strength).toBe(0.45);
    expect(a1111.unused).toEqual([]);
  });
});

describe('refusals that name the field', () => {
  let bare: string;
  let engine: Engine;
  beforeAll(async () => {
    // the sd3 export without its vae_encoder folder
    bare = await mkdtemp(join(tmpdir(), 'sd3-no-encoder-'));
    for (const f of ['model_index.json', 'scheduler', 'text_encoder', 'text_encoder_2', 'text_encoder_3', 'tokenizer', 'tokenizer_2', 'tokenizer_3', 'transformer', 'vae_decoder']) await cp(join(ROOT, 'sd3', f), join(bare, f), { recursive: true });
    engine = createNodeEngine();
  });
  afterAll(async () => {
    await engine.unload();
    await rm(bare, { recursive: true, force: true });
  });

  it('a model without vae_encoder refuses image requests by name, and still does text to image', async () => {
    const info = await engine.load({ kind: 'path', path: bare });
    expect(info.imageInput).toBe(false);
    const r = imageReference('sd3');
    const err = await engine.generate(requestOf(r, r.cases[0])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err).toMatchObject({ field: 'image' });
    expect((err as Error).message).toContain('vae_encoder/model.onnx');
    const text = await engine.generate({ prompt: r.prompt, negativePrompt: r.negativePrompt, seed: r.seed, steps: r.steps, guidance: r.guidance, width: 64, height: 64 });
    expect(diffToRgb(text.rgba, expectedImageRgb('sd3', r.cases.find((c) => c.name === 'img2img-s1')!))).toBeLessThanOrEqual(2);
  });

  it.each([
    ['a file that is not a PNG', { image: new TextEncoder().encode('GIF89a not a png at all, really') }, 'image', /PNG/],
    ['a truncated PNG', { image: imageInput('init-64.png').subarray(0, 200) }, 'image', /PNG/],
    ['a mask of another size', { image: imageInput('init-64.png'), mask: imageInput('mask-96x72.png') }, 'mask', /64x64/],
    ['strength 0', { image: imageInput('init-64.png'), strength: 0 }, 'strength', /\(0, 1\]/],
    ['strength 1.5', { image: imageInput('init-64.png'), strength: 1.5 }, 'strength', /\(0, 1\]/],
    ['a mask without an image', { mask: imageInput('mask-64.png') }, 'mask', /only with an image/],
    ['strength without an image', { strength: 0.5 }, 'strength', /only with an image/],
    ['paddingMaskCrop without a mask', { image: imageInput('init-64.png'), paddingMaskCrop: 8 }, 'paddingMaskCrop', /only with a mask/],
    ['an all-black mask to crop around', { image: imageInput('init-64.png'), mask: blackMask(), paddingMaskCrop: 8 }, 'mask', /non-black/],
  ])('%s', async (_, fields, field, message) => {
    const e = await engineFor('sd3');
    const before = e.status().requestsServed;
    const err = await e.generate({ prompt: 'x', steps: 1, seed: 1, ...fields }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err).toMatchObject({ field });
    expect((err as Error).message).toMatch(message);
    // nothing was queued for it
    expect(e.status().requestsServed).toBe(before);
    expect(e.status().requestsQueued).toBe(0);
  });
});

/** A 64x64 black PNG. */
function blackMask(): Uint8Array {
  return encodePng({ width: 64, height: 64, data: new Uint8Array(64 * 64), channels: 1, depth: 8 });
}

describe('the memory budget counts the encoder and the image state', () => {
  it('an image request needs its pixels, its encode and (to inpaint) the kept latents beside text to image; at a budget between the two, text to image runs and the image request is refused naming the size that fits', async () => {
    const r = imageReference('sd3');
    const probe = await engineFor('sd3');
    const { dims, info } = (probe as unknown as { loaded: LoadedModel }).loaded;
    const text = requestFootprint(dims, 64, 64, 3, null, 'text');
    const image = requestFootprint(dims, 64, 64, 3, null, 'image');
    const inpaint = requestFootprint(dims, 64, 64, 3, null, 'inpaint');
    const latent = 16 * 8 * 8 * 4;
    expect(text.encode).toBeNull();
    expect(image.stateBytes - text.stateBytes).toBe(3 * 64 * 64 * 4);
    expect(inpaint.stateBytes - image.stateBytes).toBe(2 * latent + 8 * 8 * 4);
    expect(peakBytes(image) - peakBytes(text)).toBe(3 * 64 * 64 * 4 + image.encode!.activationBytes);
    const memoryBytes = info.weightBytes + RESERVE_BYTES + Math.round((peakBytes(text) + peakBytes(image)) / 2);
    const tight = createNodeEngine();
    try {
      await tight.load({ kind: 'path', path: join(ROOT, 'sd3') }, undefined, { fit: { memoryBytes } });
      const c = r.cases.find((x) => x.name === 'img2img-s0.6')!;
      const err = await tight.generate(requestOf(r, c)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TooLargeError);
      expect((err as Error).message).toMatch(/64x64 with guidance needs ~.* the largest square size that fits is (48|32|16)x\1/);
      const ok = await tight.generate({ ...requestOf(r, c), image: undefined, strength: undefined });
      expect([ok.width, ok.height]).toEqual([64, 64]);
    } finally {
      await tight.unload();
    }
  });
});
