// npm run bench -- --client: figures for the engine client's work, each a
// ratio measured in one run (this machine is noisy):
//   - stall: the longest gap between a long request's steps while 8 images
//     finish together, PNGs encoded inside the step loop (before) and off it
//     (after: zlib's thread pool here, OffscreenCanvas in the browser);
//   - cache: a second load of a cached 1.3 GB model, hashing every file as
//     each load once did (before) and checking sizes only (after);
//   - bundle: the worker's JavaScript, with transformers.js (before) and with
//     Tokenizers.js alone (after).
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';
import type { Engine } from '../workers/engine/engine.ts';
import { FileCache } from '../workers/engine/model/file-cache.ts';
import { nodeCacheBackend } from '../workers/engine/model/node-file-cache.ts';
import { createNodeEngine } from '../workers/engine/node.ts';
import { startModelServer } from '../tests/helpers/model-server.ts';

const TINY = fileURLToPath(new URL('../public/models/tiny-sd3/', import.meta.url));
const CACHED_MODEL = fileURLToPath(new URL('../models/scale/step/', import.meta.url));

/** The worker bundle before the tokenizer change (commit 7d0c620, measured with the same vite build). */
const BUNDLE_BEFORE = { workerBytes: 693_402, onnxruntimeChunkBytes: 113_835, note: 'transformers.js imported whole: its own onnxruntime-web (webgpu build) bundled into the worker' };

async function stall(inline: boolean): Promise<{ maxGapMs: number; medianGapMs: number }> {
  const engine: Engine = createNodeEngine({ encodeInline: inline, maxBatch: 16, maxActive: 16 });
  await engine.load({ kind: 'path', path: TINY });
  const stamps: number[] = [];
  const long = engine.generate({ prompt: 'the long one', seed: 1, steps: 60 }, { onProgress: (e) => e.status === 'step' && stamps.push(performance.now()) });
  // 8 large images that finish together part way through the long one
  await new Promise<void>((r) => {
    const wait = () => (stamps.length >= 5 ? r() : setTimeout(wait, 5));
    wait();
  });
  const eight = Array.from({ length: 8 }, (_, i) => engine.generate({ prompt: `finishing together ${i}`, seed: 10 + i, steps: 4, guidance: 1, width: 512, height: 512 }));
  await Promise.all([long, ...eight]);
  await engine.unload();
  const gaps = stamps.slice(1).map((t, i) => t - stamps[i]);
  const sorted = [...gaps].sort((a, b) => a - b);
  return { maxGapMs: Math.round(Math.max(...gaps)), medianGapMs: Math.round(sorted[sorted.length >> 1]) };
}

async function secondLoad(): Promise<Record<string, number>> {
  const root = await mkdtemp(join(tmpdir(), 'sd3-bench-cache-'));
  const server = await startModelServer({ repos: [{ repo: 'bench/model', folder: CACHED_MODEL }] });
  const source = { kind: 'hub' as const, repo: 'bench/model', host: server.url };
  try {
    const cache = new FileCache(nodeCacheBackend(root));
    const load = async () => {
      const engine = createNodeEngine({ fileCache: cache });
      const t = performance.now();
      await engine.load(source, undefined, { fit: { memoryBytes: 4 * 1024 ** 3 } });
      const ms = performance.now() - t;
      await engine.unload();
      return ms;
    };
    await load(); // downloads into the cache
    const after = await load();
    const t = performance.now();
    const { checked } = await cache.verify('bench/model');
    const hashing = performance.now() - t;
    let bytes = 0;
    for (const e of await cache.backend.list()) bytes += e.meta.size;
    return { modelBytes: bytes, files: checked, afterMs: Math.round(after), hashEveryFileMs: Math.round(hashing), beforeMs: Math.round(after + hashing), beforeOverAfter: Number(((after + hashing) / after).toFixed(2)) };
  } finally {
    await server.close();
    await rm(root, { recursive: true, force: true });
  }
}

async function bundle(): Promise<Record<string, unknown>> {
  const outDir = await mkdtemp(join(tmpdir(), 'sd3-bench-dist-'));
  try {
    await build({ logLevel: 'silent', build: { outDir, emptyOutDir: true } });
    const sizes: Record<string, number> = {};
    for (const f of await readdir(join(outDir, 'assets'))) if (f.endsWith('.js')) sizes[f.replace(/-[\w-]{8}\.js$/, '.js')] = (await stat(join(outDir, 'assets', f))).size;
    const worker = sizes['engine.worker.js'];
    const jspi = sizes['ort.jspi.bundle.min.js'];
    return {
      before: BUNDLE_BEFORE,
      after: { workerBytes: worker, onnxruntimeChunkBytes: jspi, asyncifyChunkBytes: sizes['ort.webgpu.bundle.min.js'], note: 'Tokenizers.js alone; each onnxruntime build its own chunk, only the one the browser runs is fetched' },
      loadedInChromeBefore: BUNDLE_BEFORE.workerBytes + BUNDLE_BEFORE.onnxruntimeChunkBytes,
      loadedInChromeAfter: worker + jspi,
      beforeOverAfter: Number(((BUNDLE_BEFORE.workerBytes + BUNDLE_BEFORE.onnxruntimeChunkBytes) / (worker + jspi)).toFixed(2)),
    };
  } finally {
    await rm(outDir, { recursive: true, force: true });
  }
}

export async function clientBench(): Promise<Record<string, unknown>> {
  const before = await stall(true);
  const after = await stall(false);
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    stall: { scenario: 'a 60-step 64² request while 8 images of 512² finish together (tiny model, wasm, Node)', inline: before, offLoop: after, maxGapBeforeOverAfter: Number((before.maxGapMs / after.maxGapMs).toFixed(2)) },
    bundle: await bundle(),
  };
  try {
    await stat(CACHED_MODEL);
    result.cacheSecondLoad = await secondLoad();
  } catch {
    result.cacheSecondLoad = 'models/scale/step is built by `npm run bench -- --scale`; run that first';
  }
  return result;
}
