// Settings inside the PNG: A1111's `parameters` chunk and our JSON chunk, written
// by the engine (CLI included) and read back as the form would use them.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng, encode as encodePng } from 'fast-png';
import extractChunks from 'png-chunks-extract';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { a1111Parameters, parseA1111, pngTextChunks, readPngSettings, withSettingsChunks } from '../../workers/engine/png/settings-chunks.ts';
import { TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const plainPng = () => encodePng({ width: 2, height: 2, data: new Uint8Array(16).fill(200), channels: 4, depth: 8 });

// as AUTOMATIC1111 1.10 writes it, quoted values and an unknown sampler included
const A1111 = [
  'a lighthouse at dusk, (dramatic light:1.2)',
  'second prompt line',
  'Negative prompt: blurry, low quality',
  'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3141592, Size: 832x1216, Model hash: 3e1b9e4e11, Model: sd3_medium, Lora hashes: "a: 1, b: 2", Version: v1.10.1',
].join('\n');

describe('settings in the PNG', () => {
  it('A1111 parameters parse into the form fields and name what this app cannot use', () => {
    const { settings, unused } = parseA1111(A1111);
    expect(settings).toEqual({ prompt: 'a lighthouse at dusk, (dramatic light:1.2)\nsecond prompt line', negativePrompt: 'blurry, low quality', steps: 28, guidance: 7.5, seed: 3141592, width: 832, height: 1216, model: 'sd3_medium' });
    expect(unused).toEqual(['Sampler: DPM++ 2M (this app samples with Euler (flow match))', 'Schedule type: Karras', 'Model hash: 3e1b9e4e11', 'Lora hashes: a: 1, b: 2', 'Version: v1.10.1']);
  });

  it('our parameters text is what A1111 writes, and parses back to the same settings', () => {
    const s = { prompt: 'a fox', negativePrompt: 'fog', seed: 7, steps: 4, guidance: 4.5, width: 64, height: 48, modelId: 'http://host/m, v2' };
    const text = a1111Parameters(s);
    expect(text).toBe('a fox\nNegative prompt: fog\nSteps: 4, Sampler: Euler (flow match), CFG scale: 4.5, Seed: 7, Size: 64x48, Model: "http://host/m, v2"');
    expect(parseA1111(text)).toEqual({ settings: { prompt: 'a fox', negativePrompt: 'fog', seed: 7, steps: 4, guidance: 4.5, width: 64, height: 48, model: 'http://host/m, v2' }, unused: [] });
    // no negative prompt: no line for it, as A1111 does
    expect(a1111Parameters({ ...s, negativePrompt: '' }).split('\n')).toHaveLength(2);
  });

  it('chunks go after IHDR, keep the pixels, replace earlier ones, and carry non-Latin-1 text as iTXt', () => {
    const png = plainPng();
    const once = withSettingsChunks(png, 'Ünïcode ok', { prompt: 'x' });
    const twice = withSettingsChunks(once, 'a 猫\nSteps: 1, Sampler: Euler, CFG scale: 1, Seed: 2, Size: 16x16', { prompt: '猫', seed: 2 });
    expect(extractChunks(twice).map((c) => c.name)).toEqual(['IHDR', 'iTXt', 'iTXt', 'IDAT', 'IEND']);
    expect(extractChunks(once).map((c) => c.name)).toEqual(['IHDR', 'tEXt', 'iTXt', 'IDAT', 'IEND']);
    expect(Array.from(decodePng(twice).data)).toEqual(Array.from(decodePng(png).data));
    expect(pngTextChunks(twice).get('parameters')).toMatch(/^a 猫\n/);
    expect(readPngSettings(twice)).toMatchObject({ source: 'sd3-webgpu', settings: { prompt: '猫', seed: 2 }, unused: [] });
    expect(readPngSettings(png)).toEqual({ source: null, settings: {}, unused: [] });
  });

  describe('from the CLI', () => {
    let dir = '';
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'sd3-png-'));
      vi.spyOn(console, 'log').mockImplementation(() => undefined);
    });
    afterAll(async () => {
      vi.restoreAllMocks();
      await rm(dir, { recursive: true, force: true });
    });

    it('a CLI PNG carries `parameters` whose Seed and Steps equal its metadata, and the JSON chunk whole', async () => {
      const out = join(dir, 'x.png');
      expect(await main(['--model', TINY_MODEL_DIR, '--prompt', 'a cat', '--negative', 'dogs', '--seed', '77', '--steps', '3', '--size', '32', '--out', out])).toBe(0);
      const png = new Uint8Array(await readFile(out));
      const text = pngTextChunks(png);
      const json = JSON.parse(text.get('sd3-webgpu')!);
      expect(json).toMatchObject({ prompt: 'a cat', negativePrompt: 'dogs', seed: 77, steps: 3, width: 32, height: 32, modelId: 'tiny-sd3' });
      const parsed = parseA1111(text.get('parameters')!);
      expect(parsed.settings).toMatchObject({ seed: json.seed, steps: json.steps, guidance: json.guidance, width: 32, height: 32, prompt: 'a cat', negativePrompt: 'dogs' });
      expect(parsed.unused).toEqual([]);
    });
  });
});
