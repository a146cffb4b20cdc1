// The CLI on the same engine as the app, in Node on native onnxruntime (--backend auto: a GPU provider where
// this machine has one, else the CPU on every core; --backend wasm: onnxruntime-web's wasm, as the page without WebGPU).
//   npm run generate -- --model <folder|url|hf:owner/repo[/subfolder][@revision]> --prompt "..." --seed 7 --steps 4 --size 64 --out out.png
//   Hub repos: HF_TOKEN (or the token file `huggingface-cli login` writes) for gated repos, HF_ENDPOINT for a mirror.
//   npm run generate -- --model <...> --prompts prompts.txt --concurrency 8 --out-dir out/
//   npm run generate -- --model <...> --prompt "..." --image in.png [--strength 0.6] [--mask m.png [--padding-mask-crop N]] --out out.png
//   npm run generate -- --model <...> --plan [--size N] [--guidance G] [--gpu-memory GB]   (memory plan as JSON, no weights downloaded)
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GenerateRequest, GenerateResult } from '../workers/engine/api/types.ts';
import { EngineError, ModelTooLargeError } from '../workers/engine/errors.ts';
import { DEFAULT_MAX_ACTIVE } from '../workers/engine/interleaver/interleaver.ts';
import { planReport, refusedModelReport } from '../workers/engine/memory/plan-report.ts';
import { planModel } from '../workers/engine/model/load-model.ts';
import { ATTENTION_FORMS, NATIVE_UNLIMITED, type AttentionForm } from '../workers/engine/model/device-fit.ts';
import type { ModelSourceSpec } from '../workers/engine/api/types.ts';
import { parseModelArg } from '../workers/engine/model/hub-spec.ts';
import { openNodeModelFiles } from '../workers/engine/node.ts';
import type { BackendName } from '../workers/engine/api/types.ts';
import { engineFlags, engineFromFlags, flagError, loadWithLog, numberFlag, readFlags } from './flags.ts';

const USAGE = `usage: npm run generate -- --model <folder|url|hf:owner/repo[/subfolder][@revision]> (--prompt TEXT --out FILE.png | --prompts FILE.txt --out-dir DIR)
  [--negative TEXT] [--seed N] [--steps N] [--guidance G] [--size N | --width N --height N]
  [--image FILE.png [--strength S] [--mask FILE.png [--padding-mask-crop N]]]
  [--backend auto|cpu|webgpu|cuda|dml|coreml|wasm] [--threads N]
  [--concurrency N] [--max-batch N] [--gpu-memory GB] [--max-buffer-mb MB] [--no-t5] [--cache-dir DIR | --no-cache]
  --backend auto (default) takes the first GPU provider of onnxruntime-node that runs here, else its CPU provider
  on every core (--threads N: N cores); the first line says which and why each faster one was not used.
  --image: image to image from that PNG, resized to the request's size (without a size: the image's, rounded
  down to the model's multiple); --strength in (0, 1] (default 0.6; 1 starts from noise). --mask: inpainting,
  a PNG the image's size, white repainted and black kept; --padding-mask-crop N works on the mask's bounding
  box grown by N pixels and pastes the result into the whole image (the output has the image's size).
  URL and Hub models are cached in --cache-dir (default $SD3_WEBGPU_CACHE or ~/.cache/sd3-webgpu/models).
  Gated Hub repos need a read token: HF_TOKEN, else the file huggingface-cli login writes ($HF_HOME/token);
  HF_ENDPOINT names a Hub mirror.
       npm run generate -- --model <...> --plan [--size N | --width N --height N] [--guidance G] [--no-t5]
  [--gpu-memory GB] [--max-buffer-mb MB] [--backend webgpu|wasm|cpu|cuda|…] [--no-f16] [--subgroups]
  [--attention auto|fused|fused-chunked|decomposed-chunked]
  prints the memory plan (weights, per-request bytes, largest buffer, how many fit, verdict) as JSON and
  downloads no weights. It plans for a WebGPU adapter with 8 GB, 1 GiB buffers and shader-f16 unless told.`;

/** A numeric request flag: absent stays absent; anything else is handed to the engine, which names the field if bad. */
const num = numberFlag;

export async function main(argv: string[]): Promise<number> {
  const args = readFlags(
    argv,
    {
      prompt: { type: 'string' },
      prompts: { type: 'string' },
      negative: { type: 'string' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      guidance: { type: 'string' },
      size: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      out: { type: 'string', default: 'out.png' },
      'out-dir': { type: 'string', default: 'out' },
      concurrency: { type: 'string', default: '8' },
      plan: { type: 'boolean', default: false },
      'no-f16': { type: 'boolean', default: false },
      subgroups: { type: 'boolean', default: false },
      attention: { type: 'string' },
      image: { type: 'string' },
      mask: { type: 'string' },
      strength: { type: 'string' },
      'padding-mask-crop': { type: 'string' },
    },
    USAGE,
  );
  if (typeof args === 'number') return args;
  let source: ModelSourceSpec;
  try {
    source = parseModelArg(args.model);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 2;
  }
  if (args.plan) return plan(args, source);
  if (!args.prompt === !args.prompts) {
    console.error(`error: give exactly one of --prompt and --prompts\n${USAGE}`);
    return 2;
  }
  const flags = engineFlags(args);
  if (flags === 2) return 2;
  // the image flags mean something only with an image (and the crop only with a mask); their ranges are the engine's to check
  for (const [flag, needs, what] of [['mask', 'image', 'image to image or inpainting'], ['strength', 'image', 'image to image or inpainting'], ['padding-mask-crop', 'image', 'inpainting'], ['padding-mask-crop', 'mask', 'inpainting']] as const) {
    if (args[flag] !== undefined && args[needs] === undefined) {
      console.error(`error: --${flag}: only with --${needs} (${what})`);
      return 2;
    }
  }
  const inputs: Pick<GenerateRequest, 'image' | 'mask'> = {};
  for (const flag of ['image', 'mask'] as const) {
    const file = args[flag];
    if (file === undefined) continue;
    try {
      inputs[flag] = new Uint8Array(await readFile(file));
    } catch (e) {
      console.error(`error: --${flag}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return 2;
    }
  }

  let prompts: string[];
  if (args.prompt !== undefined) prompts = [args.prompt];
  else {
    try {
      prompts = (await readFile(args.prompts!, 'utf8')).split('\n').map((l) => l.trim()).filter(Boolean);
    } catch (e) {
      console.error(`error: --prompts: cannot read ${args.prompts} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return 2;
    }
    if (!prompts.length) {
      console.error(`error: --prompts: ${args.prompts} has no prompts (one per line)`);
      return 2;
    }
  }
  const base: Omit<GenerateRequest, 'prompt'> = { ...inputs };
  if (args.negative !== undefined) base.negativePrompt = args.negative;
  const seed = num(args.seed);
  const size = num(args.size);
  for (const [k, v] of [['steps', num(args.steps)], ['guidance', num(args.guidance)], ['width', num(args.width) ?? size], ['height', num(args.height) ?? size], ['strength', num(args.strength)], ['paddingMaskCrop', num(args['padding-mask-crop'])]] as const) {
    if (v !== undefined) (base as Record<string, unknown>)[k] = v;
  }

  const engine = await engineFromFlags(flags);
  if (!engine) return 1;
  if (!(await loadWithLog(engine, source, args['no-t5']))) return 1;

  const single = args.prompt !== undefined;
  if (!single) await mkdir(args['out-dir'], { recursive: true });
  let failures = 0;
  const write = async (i: number, r: GenerateResult) => {
    const file = single ? args.out : join(args['out-dir'], `${String(i).padStart(4, '0')}-${r.metadata.seed}.png`);
    await writeFile(file, new Uint8Array(await r.png.arrayBuffer()));
    if (!single) await writeFile(file.replace(/\.png$/, '.json'), `${JSON.stringify(r.metadata, null, 2)}\n`);
    console.log(`${file}  seed ${r.metadata.seed}  ${r.metadata.timings.totalMs.toFixed(0)} ms${r.metadata.warnings.length ? `  (${r.metadata.warnings.join('; ')})` : ''}`);
  };
  // all prompts go through one engine; the interleaver runs `concurrency` of them at once
  await Promise.all(
    prompts.map((prompt, i) =>
      engine
        .generate({ ...base, prompt, ...(seed !== undefined ? { seed: Number.isInteger(seed) ? seed + i : seed } : {}) })
        .then((r) => write(i, r))
        .catch((e: Error) => {
          failures++;
          console.error(`error: prompt ${i + 1}: ${e instanceof EngineError ? e.message : e}`);
        }),
    ),
  );
  const s = engine.status();
  // peak resident memory of the whole process (weights, activations, runtime): what a person sizes a machine by
  console.error(`done: ${s.requestsServed} images, ${failures} failed; peak RSS ${(process.resourceUsage().maxRSS / 1024 ** 2).toFixed(2)} GB`);
  await engine.unload();
  return failures ? 1 : 0;
}

/** --plan: the memory plan for one request size, as JSON on stdout; exit 0 if it fits, 1 if refused, 2 for bad flags. */
async function plan(args: { size?: string; width?: string; height?: string; guidance?: string; 'gpu-memory'?: string; 'max-buffer-mb'?: string; 'max-batch'?: string; concurrency?: string; 'no-cache'?: boolean; 'cache-dir'?: string; backend?: string; 'no-f16': boolean; 'no-t5': boolean; subgroups?: boolean; attention?: string }, source: ModelSourceSpec): Promise<number> {
  // a plan is for the page's WebGPU unless told: 'auto' plans for it
  const backend = (args.backend === undefined || args.backend === 'auto' ? 'webgpu' : args.backend) as BackendName;
  const flags = engineFlags(args);
  if (flags === 2) return 2;
  const attention = args.attention ?? 'auto';
  if (attention !== 'auto' && !(ATTENTION_FORMS as readonly string[]).includes(attention)) return flagError('--attention', `auto or one of ${ATTENTION_FORMS.join(', ')}`, attention);
  const files = openNodeModelFiles(source);
  const fit = {
    attention: attention as AttentionForm | 'auto',
    ...(flags.gpuMemoryBytes !== undefined ? { memoryBytes: flags.gpuMemoryBytes } : {}),
    // native CPU and CUDA sessions have no buffer limit; WebGPU's is 1 GiB on most adapters
    maxBufferBytes: flags.maxBufferBytes ?? (NATIVE_UNLIMITED.has(backend) ? Infinity : 1024 ** 3),
    maxFileBytes: Infinity, // the browser streams large files (JSPI); the plan is about memory
    features: [...(args['no-f16'] ? [] : ['shader-f16']), ...(args.subgroups ? ['subgroups'] : [])],
  };
  let p;
  try {
    p = await planModel(files, { backend, fit, skipT5: args['no-t5'] });
  } catch (e) {
    if (e instanceof ModelTooLargeError) {
      console.log(JSON.stringify(refusedModelReport(files.id, backend, e), null, 2));
      return 1;
    }
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const size = num(args.size);
  const width = num(args.width) ?? size ?? p.defaults.width;
  const height = num(args.height) ?? size ?? p.defaults.height;
  const guidance = num(args.guidance) ?? p.defaults.guidance;
  const { minSize, maxSize, sizeMultiple } = p.limits;
  for (const [flag, v] of [['--width', width], ['--height', height]] as const) {
    if (!Number.isInteger(v) || v < minSize || v > maxSize || v % sizeMultiple) return flagError(flag, `an integer in ${minSize}..${maxSize}, a multiple of ${sizeMultiple}`, String(v));
  }
  if (!(guidance >= 0 && guidance <= 100)) return flagError('--guidance', 'a number in 0..100', args.guidance);
  const report = planReport(p, width, height, guidance, DEFAULT_MAX_ACTIVE);
  console.log(JSON.stringify(report, null, 2));
  console.error(`${report.verdict}: ${report.reason}`);
  return report.verdict === 'fits' ? 0 : 1;
}

if (process.argv[1]?.endsWith('generate.ts')) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
