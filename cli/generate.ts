// The CLI on the same engine as the app (Node, onnxruntime-web's wasm backend).
//   npm run generate -- --model <folder|url|hf:owner/repo> --prompt "..." --seed 7 --steps 4 --size 64 --out out.png
//   npm run generate -- --model <...> --prompts prompts.txt --concurrency 8 --out-dir out/
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { GenerateRequest, GenerateResult } from '../workers/engine/api/types.ts';
import { EngineError } from '../workers/engine/errors.ts';
import { createNodeEngine, parseModelArg } from '../workers/engine/node.ts';
import { defaultNodeCacheFolder, nodeFileCache } from '../workers/engine/model/node-file-cache.ts';

const USAGE = `usage: npm run generate -- --model <folder|url|hf:owner/repo> (--prompt TEXT --out FILE.png | --prompts FILE.txt --out-dir DIR)
  [--negative TEXT] [--seed N] [--steps N] [--guidance G] [--size N | --width N --height N]
  [--concurrency N] [--max-batch N] [--no-t5] [--cache-dir DIR | --no-cache]
  URL and Hub models are cached in --cache-dir (default $SD3_WEBGPU_CACHE or ~/.cache/sd3-webgpu/models).`;

/** A numeric flag: absent stays absent; anything else is handed to the engine, which names the field if bad. */
const num = (v: string | undefined) => (v === undefined ? undefined : v.trim() === '' ? NaN : Number(v));

export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        model: { type: 'string', default: 'public/models/tiny-sd3' },
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
        'max-batch': { type: 'string' },
        'no-t5': { type: 'boolean', default: false },
        'cache-dir': { type: 'string' },
        'no-cache': { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  if (!args.prompt === !args.prompts) {
    console.error(`error: give exactly one of --prompt and --prompts\n${USAGE}`);
    return 2;
  }
  const concurrency = Number(args.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    console.error(`error: --concurrency: expected an integer in 1..256, got ${args.concurrency}`);
    return 2;
  }
  const maxBatch = num(args['max-batch']);
  if (maxBatch !== undefined && (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 64)) {
    console.error(`error: --max-batch: expected an integer in 1..64, got ${args['max-batch']}`);
    return 2;
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
  const base: Omit<GenerateRequest, 'prompt'> = {};
  if (args.negative !== undefined) base.negativePrompt = args.negative;
  const seed = num(args.seed);
  const size = num(args.size);
  for (const [k, v] of [['steps', num(args.steps)], ['guidance', num(args.guidance)], ['width', num(args.width) ?? size], ['height', num(args.height) ?? size]] as const) {
    if (v !== undefined) (base as Record<string, unknown>)[k] = v;
  }

  const fileCache = args['no-cache'] ? undefined : nodeFileCache(args['cache-dir'] ?? defaultNodeCacheFolder());
  const engine = createNodeEngine({ maxActive: concurrency, maxBatch, fileCache });
  let lastFile = '';
  const info = await engine
    .load(parseModelArg(args.model), (e) => {
      if (e.status === 'done' && e.file !== lastFile) console.error(`loaded ${(lastFile = e.file ?? '')}${e.cached ? ' (cached)' : ''}`);
    }, { skipT5: args['no-t5'] })
    .catch((e: Error) => {
      console.error(`error: ${e.message}`);
      return null;
    });
  if (!info) return 1;
  console.error(`model ${info.id} (${info.family}) on ${info.backend}; defaults ${info.defaults.steps} steps, guidance ${info.defaults.guidance}, ${info.defaults.width}x${info.defaults.height}`);

  const single = args.prompt !== undefined;
  if (!single) await mkdir(args['out-dir'], { recursive: true });
  let failures = 0;
  const write = async (i: number, r: GenerateResult) => {
    const file = single ? args.out : join(args['out-dir'], `${String(i).padStart(4, '0')}-${r.metadata.seed}.png`);
    await writeFile(file, r.png);
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
  console.error(`done: ${s.requestsServed} images, ${failures} failed`);
  await engine.unload();
  return failures ? 1 : 0;
}

if (process.argv[1]?.endsWith('generate.ts')) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
