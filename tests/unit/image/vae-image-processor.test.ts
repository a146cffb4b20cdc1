// The engine's image code against what Pillow 12.3 and diffusers' VaeImageProcessor
// made of the same inputs (tools/fixtures/make_image_processor_cases.py), every
// case exact: equal bytes, bit-identical float32. Then the SD3 reference
// pipeline's own encoder inputs, crop region and mask latents
// (tests/fixtures/real-exports/reference/).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../../workers/engine/errors.ts';
import { resize, type ResampleFilter } from '../../../workers/engine/image/lanczos.ts';
import { decodeImageFile, toGrayscale, toRgb, type Pixels } from '../../../workers/engine/image/pixels.ts';
import { applyOverlay, cropRegion, maskToLatent, preprocessImage, preprocessMask, type Region, type ResizeMode } from '../../../workers/engine/image/vae-image-processor.ts';

const CASES_DIR = join(import.meta.dirname, '../../fixtures/image-processor');
const REFERENCE = join(import.meta.dirname, '../../fixtures/real-exports/reference');

type Case =
  | { kind: 'decode'; name: string; input: string; pilMode: string; channels: 1 | 3; size: [number, number]; l: string; rgb: string }
  | { kind: 'resize'; name: string; input: string; size: [number, number]; box?: [number, number, number, number]; filter: ResampleFilter; output: string }
  | { kind: 'preprocess'; name: string; input: string; width: number; height: number; resizeMode: ResizeMode; crop?: Region; output: string }
  | { kind: 'mask'; name: string; input: string; width: number; height: number; resizeMode: ResizeMode; crop?: Region; output: string; latents: { width: number; height: number; output: string }[] }
  | { kind: 'cropRegion'; name: string; input: string; width: number; height: number; pad: number; region: Region }
  | { kind: 'overlay'; name: string; mask: string; init: string; image: string; crop?: Region; output: string };

const manifest = JSON.parse(readFileSync(join(CASES_DIR, 'cases.json'), 'utf8')) as { cases: Case[] };
const ofKind = <K extends Case['kind']>(kind: K) => manifest.cases.filter((c): c is Extract<Case, { kind: K }> => c.kind === kind).map((c) => [c.name, c] as const);

const bytes = (file: string) => new Uint8Array(readFileSync(file));
const png = (name: string, dir = CASES_DIR) => decodeImageFile(bytes(join(dir, name)), name);
const u8 = (name: string) => bytes(join(CASES_DIR, name));
const f32 = (file: string) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

/** Where two pixel buffers differ, as a count and the largest difference: a readable failure instead of a 50 KB diff. */
function byteDiff(got: Uint8Array, want: Uint8Array) {
  let count = 0;
  let max = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (d) count++;
    max = Math.max(max, d);
  }
  return { length: got.length, count, max };
}

/** Bit-for-bit float32 comparison (as integers, so -0 and 0 or NaNs cannot hide). */
function floatBitsDiff(got: Float32Array, want: Float32Array) {
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let count = 0;
  for (let i = 0; i < w.length; i++) if (g[i] !== w[i]) count++;
  return { length: got.length, count };
}

const exactBytes = (got: Uint8Array, want: Uint8Array) => expect(byteDiff(got, want)).toEqual({ length: want.length, count: 0, max: 0 });
const exactFloats = (got: Float32Array, want: Float32Array) => expect(floatBitsDiff(got, want)).toEqual({ length: want.length, count: 0 });

describe('decodeImageFile: Pillow\'s 8-bit samples from every PNG layout', () => {
  it.each(ofKind('decode'))('%s', (_, c) => {
    const p = png(c.input);
    expect([p.width, p.height]).toEqual(c.size);
    expect(p.channels).toBe(c.channels);
    exactBytes(toGrayscale(p).data, u8(c.l));
    exactBytes(toRgb(p).data, u8(c.rgb));
  });

  it('anything but a whole PNG is an InvalidRequestError naming the field', () => {
    const good = bytes(join(CASES_DIR, 'png-rgb8.png'));
    const bad = [new Uint8Array(0), new TextEncoder().encode('GIF89a not a png at all'), good.subarray(0, 7), good.subarray(0, 40), good.subarray(0, good.length - 20)];
    for (const b of bad) {
      let err: unknown;
      try {
        decodeImageFile(b, 'image');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidRequestError);
      expect((err as InvalidRequestError).field).toBe('image');
      expect((err as InvalidRequestError).message).toMatch(new RegExp(`^image: expected a PNG image, got "<${b.length} bytes, `));
    }
  });

  it('an interlaced PNG of under 8 bits is refused, not decoded wrong', () => {
    const interlaced = bytes(join(CASES_DIR, 'png-gray2.png'));
    interlaced[28] = 1; // IHDR's interlace method: Adam7 (fast-png checks no CRC)
    expect(() => decodeImageFile(interlaced, 'mask')).toThrow(/^mask: expected a PNG image that is not interlaced at under 8 bits per sample/);
  });
});

describe('resize: Pillow\'s Image.resize, Lanczos and bicubic', () => {
  it.each(ofKind('resize'))('%s', (_, c) => {
    const out = resize(png(c.input), c.size[0], c.size[1], c.box, c.filter);
    expect([out.width, out.height]).toEqual(c.size);
    exactBytes(out.data, u8(c.output));
  });
});

describe('VaeImageProcessor', () => {
  it.each(ofKind('preprocess'))('preprocess %s', (_, c) => {
    exactFloats(preprocessImage(png(c.input), c.width, c.height, { resizeMode: c.resizeMode, crop: c.crop }), f32(join(CASES_DIR, c.output)));
  });

  it.each(ofKind('mask'))('mask processor %s, and nearest to latent sizes', (_, c) => {
    const mask = preprocessMask(png(c.input), c.width, c.height, { resizeMode: c.resizeMode, crop: c.crop });
    exactFloats(mask, f32(join(CASES_DIR, c.output)));
    for (const l of c.latents) exactFloats(maskToLatent(mask, c.width, c.height, l.width, l.height), f32(join(CASES_DIR, l.output)));
  });

  it.each(ofKind('cropRegion'))('get_crop_region %s', (_, c) => {
    expect(cropRegion(png(c.input), c.width, c.height, c.pad)).toEqual(c.region);
  });

  it('an all-black mask has no crop region: InvalidRequestError on the mask', () => {
    const black: Pixels = { width: 5, height: 4, channels: 1, data: new Uint8Array(20) };
    expect(() => cropRegion(black, 64, 64, 8)).toThrow(InvalidRequestError);
  });

  it.each(ofKind('overlay'))('apply_overlay %s', (_, c) => {
    const out = applyOverlay(png(c.mask), png(c.init), png(c.image), c.crop);
    exactBytes(out.data, u8(c.output));
  });
});

describe('the SD3 reference pipeline\'s inputs', () => {
  const inputs = join(REFERENCE, 'inputs');
  const img2img = join(REFERENCE, 'sd3/img2img');
  const ref = JSON.parse(readFileSync(join(img2img, 'reference.json'), 'utf8')) as {
    width: number;
    height: number;
    cases: { name: string; kind: string; mask?: string; paddingMaskCrop?: number; cropRegion?: Region }[];
  };
  const { width, height } = ref;

  it('init-96x72.png Lanczos-resized to 64x64 is the encoder input diffusers made', () => {
    exactFloats(preprocessImage(png('init-96x72.png', inputs), width, height), f32(join(inputs, 'init-96x72-resized.preprocessed.bin')));
  });

  it('padding_mask_crop 8 on mask-96x72.png: the crop region, and the cropped, filled encoder input', () => {
    const crop = ref.cases.find((c) => c.name === 'inpaint-crop-s0.6')!;
    const region = cropRegion(png('mask-96x72.png', inputs), width, height, crop.paddingMaskCrop!);
    expect(region).toEqual([39, 19, 92, 72]);
    expect(region).toEqual(crop.cropRegion);
    exactFloats(preprocessImage(png('init-96x72.png', inputs), width, height, { resizeMode: 'fill', crop: region }), f32(join(inputs, 'init-96x72-crop.preprocessed.bin')));
  });

  const inpaint = ref.cases.filter((c) => c.kind === 'inpaint');
  it.each(inpaint.map((c) => [c.name, c] as const))('%s: the mask at latent size', (_, c) => {
    const mask = png(c.mask!, inputs);
    const opts = c.cropRegion ? { resizeMode: 'fill' as const, crop: c.cropRegion } : {};
    const latent = maskToLatent(preprocessMask(mask, width, height, opts), width, height, width / 8, height / 8);
    exactFloats(latent, f32(join(img2img, `${c.name}.mask_latents.bin`)));
  });
});
