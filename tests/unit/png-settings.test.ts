// Settings inside the PNG: A1111's `parameters` chunk and our JSON chunk, written
// by the engine (CLI included) and read back as the form would use them.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng, encode as encodePng } from 'fast-png';
import extractChunks from 'png-chunks-extract';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import * as tEXt from 'png-chunk-text';
import encodeChunks from 'png-chunks-encode';
import { zlibSync } from 'fflate';
import { a1111Pairs, a1111Parameters, inflateCapped, MAX_TEXT_BYTES, parseA1111, pngTextChunks, readPngSettings, SettingsTooLargeError, withSettingsChunks } from '../../workers/engine/png/settings-chunks.ts';
import { pngWithCompressedITXt, zeroBomb } from '../helpers/png-bomb.ts';
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

// A PNG comes from anyone: its text is capped once inflated, and the A1111 text
// is parsed in linear time, with the matches A1111's own pattern finds.
describe('hostile PNG text', () => {
  // A1111's pattern, as the reader used it before: the reference for the linear scan
  const A1111_PATTERN = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
  const byPattern = (line: string) => [...line.matchAll(A1111_PATTERN)].map((m) => [m[1], m[2]]);
  const MIB = 1 << 20;

  it('a compressed chunk that inflates to 1.5 GiB: inflating stops just past 1 MB, in well under a second', () => {
    const bomb = zeroBomb(1536);
    expect(bomb.length).toBeLessThan(1.7 * MIB);
    const started = performance.now();
    const { bytes, inflated } = inflateCapped(bomb);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(bytes).toBeNull();
    // one step of 1 KiB compressed past the cap at most (deflate's ratio is at most 1032:1)
    expect(inflated).toBeGreaterThan(MAX_TEXT_BYTES);
    expect(inflated).toBeLessThanOrEqual(MAX_TEXT_BYTES + 1032 * 1024 + 32 * 1024);
  });

  it("the cap is exact: text of the cap's size is read, one byte more is not", () => {
    const bomb = zeroBomb(4);
    expect(inflateCapped(bomb, 4 * MIB).bytes?.length).toBe(4 * MIB);
    expect(inflateCapped(bomb, 4 * MIB - 1).bytes).toBeNull();
    // ordinary text in many steps comes back whole
    const text = Array.from({ length: 20000 }, (_, i) => `word${i * 7919}`).join(' ');
    expect(new TextDecoder().decode(inflateCapped(zlibSync(new TextEncoder().encode(text))).bytes!)).toBe(text);
  });

  it('the hostile PNG gets a message naming the cap; beside a good chunk it is named among the unused', () => {
    const hostile = pngWithCompressedITXt('parameters', zeroBomb(1536));
    const started = performance.now();
    let thrown: unknown;
    try {
      readPngSettings(hostile);
    } catch (e) {
      thrown = e;
    }
    expect(performance.now() - started).toBeLessThan(1000);
    expect(thrown).toBeInstanceOf(SettingsTooLargeError);
    expect((thrown as SettingsTooLargeError).toJSON()).toMatchObject({ code: 'too_large', keywords: ['parameters'], message: 'its "parameters" settings text is over 1 MB (the most this app reads), so it was ignored' });
    expect(pngTextChunks(hostile).size).toBe(0);

    // our JSON chunk over the cap, a good `parameters` chunk after it: the good one is used
    const chunks = extractChunks(pngWithCompressedITXt('sd3-webgpu', zeroBomb(2)));
    const both = encodeChunks([...chunks.slice(0, 2), tEXt.encode('parameters', 'a fox\nSteps: 3, Sampler: Euler, Seed: 5'), ...chunks.slice(2)]);
    expect(readPngSettings(both)).toEqual({ source: 'a1111', settings: { prompt: 'a fox', negativePrompt: '', steps: 3, seed: 5 }, unused: ['sd3-webgpu: settings text over 1 MB (ignored)'] });
    // an uncompressed text chunk over the cap is ignored the same way
    const plain = plainPng();
    const pc = extractChunks(plain);
    const long = encodeChunks([pc[0], tEXt.encode('parameters', 'x'.repeat(MAX_TEXT_BYTES + 1)), ...pc.slice(1)]);
    expect(() => readPngSettings(long)).toThrow(SettingsTooLargeError);
  });

  it('a chunk length past the end of the file is refused before anything is allocated for it', () => {
    const png = Uint8Array.from(plainPng());
    // IHDR's length field, rewritten to 4 GB
    new DataView(png.buffer).setUint32(8, 0xfffffff0);
    expect(() => readPngSettings(png)).toThrow('its IHDR chunk runs past the end of the file');
    expect(() => readPngSettings(new Uint8Array([1, 2, 3]))).toThrow('Invalid .png file header');
  });

  it("the linear scan finds exactly the pairs A1111's own pattern finds", () => {
    const lines = [
      A1111.split('\n').at(-1)!,
      'Steps: 4, Sampler: Euler (flow match), CFG scale: 4.5, Seed: 7, Size: 64x48, Model: "http://host/m, v2"',
      '  Lead space: 1,Key-with/slash: 2 , x: 3',
      'Quoted: "a \\"b\\" c", Next: 1',
      'Quote then text: "a" b, Next: 2',
      'Empty quotes: "", Next: 3',
      'Unclosed: "abc, Next: 4',
      'Escaped end: "abc\\", Next: 5',
      'a: , b:, c:1',
      'no pairs here at all',
      'x:1',
      ':1, 1: 2, _a: 3, a b c d: 4',
      'Lora hashes: "a: 1, b: 2", Version: v1.10.1',
      'Key:\t"tab", K2: "\\\u2028", K3: 1',
    ];
    for (const line of lines) expect(a1111Pairs(line), line).toEqual(byPattern(line));
    // and on many lines made of the characters that matter, from a seeded generator
    const alphabet = ['a', 'B', '1', '_', ' ', '-', '/', ':', ',', '"', '\\', '\t', 'é'];
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 3000; i++) {
      const line = Array.from({ length: next() % 40 }, () => alphabet[next() % alphabet.length]).join('');
      expect(a1111Pairs(line), JSON.stringify(line)).toEqual(byPattern(line));
    }
  });

  it('a 1 MB line parses in well under a second (the pattern took 2.5 s for 40 KB)', () => {
    const hostileLines = [
      'a'.repeat(MIB), // one run of key characters with no colon: every start rescans it
      `k: "${'a b\\"'.repeat(MIB / 5)}`, // a quote that never closes
      ' -/'.repeat(MIB / 3),
      'Steps: 1, '.repeat(MIB / 10),
    ];
    for (const line of hostileLines) {
      const started = performance.now();
      const { settings, unused } = parseA1111(`a prompt\n${line}`);
      expect(performance.now() - started, line.slice(0, 20)).toBeLessThan(1000);
      expect(settings.prompt).toMatch(/^a prompt/);
      if (line.startsWith('Steps')) expect([settings.steps, unused]).toEqual([1, []]);
    }
  });
});
