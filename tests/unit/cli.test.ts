// The CLI runs the same engine: one image, a prompts file at concurrency 8, bad flags;
// image to image and inpainting from PNG files, against diffusers' own pipelines.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { main as serve } from '../../server/serve.ts';
import { readPngSettings } from '../../workers/engine/png/settings-chunks.ts';
import { diffToRgb, expectedImageRgb, imageReference, REAL_EXPORTS_DIR, type ImageCase } from '../helpers/real-exports.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

/** diffusers' StableDiffusion3Img2ImgPipeline / InpaintPipeline runs on the sd3 real-export fixture. */
const INPUTS_DIR = join(REAL_EXPORTS_DIR, 'reference', 'inputs');
const imageRef = imageReference('sd3');
const imageCase = (name: string) => imageRef.cases.find((c) => c.name === name)!;
const expectedRgb = (c: ImageCase) => expectedImageRgb('sd3', c);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('npm run generate', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sd3-cli-'));
    vi.spyOn(console, 'log').mockImplementation(() => undefined);
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes one PNG equal to the engine’s own image for the same seed', async () => {
    const out = join(dir, 'one.png');
    expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'a cat', '--seed', '7', '--steps', '4', '--size', '64', '--out', out])).toBe(0);
    const png = decodePng(await readFile(out));
    const ref = await (await loadTinyEngine()).generate({ prompt: 'a cat', seed: 7, steps: 4, width: 64, height: 64 });
    expect(maxPixelDiff(Uint8ClampedArray.from(png.data), ref.rgba)).toBe(0);
  });

  it('runs a prompts file at once and writes PNG + JSON metadata per image', async () => {
    const file = join(dir, 'prompts.txt');
    await writeFile(file, Array.from({ length: 10 }, (_, i) => `prompt number ${i}`).join('\n'));
    const outDir = join(dir, 'many');
    expect(await main(['--model', TINY_MODEL_DIR, '--prompts', file, '--concurrency', '8', '--out-dir', outDir, '--seed', '100', '--steps', '2'])).toBe(0);
    const names = (await readdir(outDir)).sort();
    expect(names.filter((n) => n.endsWith('.png'))).toHaveLength(10);
    const meta = JSON.parse(await readFile(join(outDir, names.find((n) => n.startsWith('0003'))!.replace('.png', '.json')), 'utf8'));
    expect(meta).toMatchObject({ prompt: 'prompt number 3', seed: 103, steps: 2, modelId: 'tiny-sd3' });
  });

  it('bad input exits non-zero with the field named', async () => {
    const errors: string[] = [];
    vi.mocked(console.error).mockImplementation((m: string) => void errors.push(m));
    expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--steps', '0', '--out', join(dir, 'x.png')])).toBe(1);
    expect(errors.join('\n')).toMatch(/steps: expected an integer in 1\.\.500/);
    expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--concurrency', 'lots'])).toBe(2);
    expect(await main(['--bogus'])).toBe(2);
    expect(await main(['--model', join(dir, 'nowhere'), '--prompt', 'x'])).toBe(1);
    expect(errors.join('\n')).toMatch(/model_index\.json/);
  });

  it('--gpu-memory is the engine\'s memory budget: a model that cannot fit it is refused with numbers, naming the setting', async () => {
    const errors: string[] = [];
    vi.mocked(console.error).mockImplementation((m: string) => void errors.push(m));
    const out = join(dir, 'budget.png');
    expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--gpu-memory', '0.001', '--out', out])).toBe(1);
    expect(errors.join('\n')).toMatch(/error: tiny-sd3: this model needs ~[\d.]+ MB of GPU memory .* offers 1\.0 MB\. .*\(the GPU memory is set by --gpu-memory\)$/m);
    expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--gpu-memory', '1', '--steps', '2', '--size', '64', '--out', out])).toBe(0);
  });

  it('the engine flags are checked alike by generate and serve (cli/flags.ts), before anything loads', async () => {
    const errors: string[] = [];
    vi.mocked(console.error).mockImplementation((m: string) => void errors.push(m));
    const cases: [string[], string][] = [
      [['--gpu-memory', '0'], '--gpu-memory: expected a number of GB in (0, 1024], got 0'],
      [['--max-buffer-mb', '1.5'], '--max-buffer-mb: expected an integer >= 1, got 1.5'],
      [['--max-batch', '65'], '--max-batch: expected an integer in 1..64, got 65'],
      [['--concurrency', ''], '--concurrency: expected an integer in 1..256, got '],
    ];
    for (const [flags, message] of cases) {
      for (const run of [() => main(['--model', TINY_MODEL_DIR, '--prompt', 'x', ...flags]), () => serve(['--model', TINY_MODEL_DIR, '--port', '0', ...flags])]) {
        errors.length = 0;
        expect(await run()).toBe(2);
        expect(errors).toEqual([`error: ${message}`]);
      }
    }
  });

  describe('image to image and inpainting (--image, --strength, --mask, --padding-mask-crop)', () => {
    /** The flags of a diffusers case on the sd3 fixture (native CPU, as diffusers' references are held to). */
    const caseFlags = (c: ImageCase, out: string) => [
      '--model', join(REAL_EXPORTS_DIR, 'sd3'), '--backend', 'cpu',
      '--prompt', imageRef.prompt, '--negative', imageRef.negativePrompt, '--seed', String(imageRef.seed), '--steps', String(imageRef.steps),
      '--guidance', String(imageRef.guidance), '--width', String(imageRef.width), '--height', String(imageRef.height),
      '--image', join(INPUTS_DIR, c.image), '--strength', String(c.strength),
      ...(c.mask ? ['--mask', join(INPUTS_DIR, c.mask)] : []),
      ...(c.paddingMaskCrop !== undefined ? ['--padding-mask-crop', String(c.paddingMaskCrop)] : []),
      '--out', out,
    ];

    it.each([['img2img-s0.3'], ['inpaint-crop-s0.6']])('%s: the PNG is within 2 levels of diffusers’ and records the strength and its inputs', async (name) => {
      const c = imageCase(name);
      const out = join(dir, `${name}.png`);
      expect(await main(caseFlags(c, out))).toBe(0);
      const bytes = new Uint8Array(await readFile(out));
      const png = decodePng(bytes);
      // padding_mask_crop pastes the 64x64 result back into the whole 96x72 image
      expect([png.width, png.height]).toEqual(c.outputSize);
      expect(diffToRgb(png.data, expectedRgb(c), png.channels)).toBeLessThanOrEqual(2);
      const { settings, json } = readPngSettings(bytes);
      expect(settings.strength).toBe(c.strength);
      // the files the flags named, by their hashes
      expect((json!.image as { sha256: string }).sha256).toBe(sha256(readFileSync(join(INPUTS_DIR, c.image))));
      if (c.mask) expect(json).toMatchObject({ mask: { sha256: sha256(readFileSync(join(INPUTS_DIR, c.mask))) }, paddingMaskCrop: c.paddingMaskCrop });
      else expect(json!.mask).toBeUndefined();
    });

    it('--help lists the image flags', async () => {
      const lines: string[] = [];
      vi.mocked(console.log).mockImplementation((m: string) => void lines.push(m));
      expect(await main(['--help'])).toBe(0);
      for (const flag of ['--image FILE.png', '--strength S', '--mask FILE.png', '--padding-mask-crop N']) expect(lines.join('\n')).toContain(flag);
    });

    it('bad image input exits non-zero naming the flag or the field', async () => {
      const errors: string[] = [];
      vi.mocked(console.error).mockImplementation((m: string) => void errors.push(m));
      const notPng = join(dir, 'not-a.png');
      await writeFile(notPng, 'GIF89a: not a PNG at all');
      const init = join(INPUTS_DIR, 'init-64.png');
      const mask = join(INPUTS_DIR, 'mask-64.png');
      const missing = join(dir, 'nowhere.png');
      const out = join(dir, 'bad.png');
      const cases: [string[], number, RegExp][] = [
        // refused by the engine once the model is loaded: the request's field, with what it takes
        [['--image', notPng], 1, /^error: prompt 1: image: expected a PNG file .*, got "24 bytes that are not a PNG file"$/m],
        [['--image', init, '--strength', '1.5'], 1, /^error: prompt 1: strength: expected a number in \(0, 1\] .*, got 1\.5$/m],
        [['--image', init, '--mask', notPng], 1, /^error: prompt 1: mask: expected a PNG file/m],
        // refused before anything loads: the flag
        [['--image', missing], 2, new RegExp(`^error: --image: cannot read ${missing.replace(/[.\\]/g, '\\$&')} \\(ENOENT\\)$`, 'm')],
        [['--image', init, '--mask', dir], 2, /^error: --mask: cannot read .* \(EISDIR\)$/m],
        [['--mask', mask], 2, /^error: --mask: only with --image/m],
        [['--strength', '0.5'], 2, /^error: --strength: only with --image/m],
        [['--image', init, '--padding-mask-crop', '8'], 2, /^error: --padding-mask-crop: only with --mask/m],
      ];
      for (const [flags, code, message] of cases) {
        errors.length = 0;
        expect([flags, await main(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--steps', '1', '--size', '64', ...flags, '--out', out])]).toEqual([flags, code]);
        expect(errors.join('\n')).toMatch(message);
      }
      // nothing was written for any of them
      expect((await readdir(dir)).includes('bad.png')).toBe(false);
    });
  });
});
