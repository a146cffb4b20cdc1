// npm run bench -- --img2img: what an image request costs beyond text to image,
// on native CPU, on the wide model (SD3-medium width, 2 blocks) with its VAE
// encoder: the encoder's run per request against one guided step (one
// transformer run of the request's two rows), from the engine's own stage
// times; and end to end, img2img and inpainting at strength 0.6 against text
// to image at the same settings (they run 60% of the steps, plus the encode).
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GenerateRequest } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { createNodeEngine } from '../workers/engine/node.ts';
import { cpuRuntime } from '../workers/engine/runtime/node-runtime.ts';
import { rgbaToPng } from '../workers/engine/sd3/decode.ts';
import { ensureBuilt } from './built-model.ts';
import { WIDE_ARGS } from './native.ts';
import { writeResults } from './results-file.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const DIR = join(ROOT, 'models', 'bench-native', 'wide-img');
const ARGS = WIDE_ARGS.filter((a) => a !== '--no-vae-encoder');
const STEPS = 10;
const STRENGTH = 0.6;
const REPEATS = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

/** Stage times the engine recorded since `before` (total ms, runs) for one stage. */
function stageDelta(engine: Engine, before: ReturnType<Engine['status']>, stage: 'vaeEncode' | 'transformer') {
  const now = engine.status().stages?.stages[stage];
  const was = before.stages?.stages[stage];
  return { ms: (now?.wallTotalMs ?? 0) - (was?.wallTotalMs ?? 0), runs: (now?.runs ?? 0) - (was?.runs ?? 0) };
}

async function timed(engine: Engine, r: GenerateRequest) {
  const before = engine.status();
  const t = performance.now();
  await engine.generate(r);
  const wallMs = performance.now() - t;
  return { wallMs, encode: stageDelta(engine, before, 'vaeEncode'), transformer: stageDelta(engine, before, 'transformer') };
}

export async function img2imgBench(out: string, argv: string[]): Promise<void> {
  const model = await ensureBuilt(DIR, ARGS);
  const sizes = argv.includes('--quick') ? [64] : [64, 256];
  const engine = createNodeEngine({ runtime: cpuRuntime() });
  await engine.load({ kind: 'path', path: model.dir });
  const rows = [];
  for (const size of sizes) {
    const base: GenerateRequest = { prompt: 'a lighthouse on a cliff', seed: 7, steps: STEPS, guidance: 4, width: size, height: size };
    // the input: an image the model made, and a mask over its left half
    const made = await engine.generate(base);
    const image = rgbaToPng(made.rgba, size, size);
    const maskRgba = new Uint8ClampedArray(size * size * 4).map((_, i) => (i % 4 === 3 ? 255 : (i / 4) % size < size / 2 ? 255 : 0));
    const mask = rgbaToPng(maskRgba, size, size);
    const kinds: [string, GenerateRequest][] = [
      ['text to image', base],
      ['img2img', { ...base, image, strength: STRENGTH }],
      ['inpaint', { ...base, image, mask, strength: STRENGTH }],
    ];
    const runs: Record<string, Awaited<ReturnType<typeof timed>>[]> = {};
    for (let i = 0; i < REPEATS; i++) for (const [name, r] of kinds) (runs[name] ??= []).push(await timed(engine, { ...r, seed: 100 + i }));
    const perStep = (name: string) => median(runs[name].map((x) => x.transformer.ms / x.transformer.runs));
    const stepMs = perStep('text to image');
    const encodeMs = median(runs.img2img.map((x) => x.encode.ms));
    const wall = (name: string) => median(runs[name].map((x) => x.wallMs));
    rows.push({
      size,
      steps: STEPS,
      strength: STRENGTH,
      stepsRun: runs.img2img[0].transformer.runs,
      guidedStepMs: round(stepMs),
      vaeEncodeMs: round(encodeMs),
      encodeOverStep: round(encodeMs / stepMs, 2),
      textToImageMs: round(wall('text to image')),
      img2imgMs: round(wall('img2img')),
      inpaintMs: round(wall('inpaint')),
      img2imgOverText: round(wall('img2img') / wall('text to image'), 2),
      inpaintOverImg2img: round(wall('inpaint') / wall('img2img'), 2),
    });
  }
  await engine.unload();
  const figures = { date: new Date().toISOString(), runtime: 'onnxruntime-node cpu', model: { args: ARGS, mb: round(model.bytes / 2 ** 20) }, repeats: REPEATS, rows };
  console.table(rows);
  writeResults(out, 'img2img', figures);
}
