// The CLI runs the same engine: one image, a prompts file at concurrency 8, bad flags.
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as decodePng } from 'fast-png';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { main as serve } from '../../server/serve.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

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
});
