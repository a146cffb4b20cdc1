// The built-in tiny model loaded once per test file: on native onnxruntime's
// CPU provider (what Node entries run), or on onnxruntime-web's wasm (the
// reference the page's images are held to: the same wasm code as the page).
import { fileURLToPath } from 'node:url';
import type { Engine } from '../../workers/engine/engine.ts';
import { createNodeEngine, wasmNodeRuntime, type NodeEngineOptions } from '../../workers/engine/node.ts';

export const TINY_MODEL_DIR = fileURLToPath(new URL('../../public/models/tiny-sd3/', import.meta.url));
export const TINY_MODEL_EXTERNAL_DIR = fileURLToPath(new URL('../../public/models/tiny-sd3-external/', import.meta.url));

const shared = new Map<string, Promise<Engine>>();

/** A fresh engine with the tiny model (options change budgets, batching…). */
export async function newTinyEngine(options: NodeEngineOptions = {}, dir = TINY_MODEL_DIR): Promise<Engine> {
  const engine = createNodeEngine(options);
  await engine.load({ kind: 'path', path: dir });
  return engine;
}

/** One engine shared by the tests of a file that only need defaults. */
export function loadTinyEngine(): Promise<Engine> {
  let e = shared.get(TINY_MODEL_DIR);
  if (!e) shared.set(TINY_MODEL_DIR, (e = newTinyEngine()));
  return e;
}

/** One wasm engine (one thread, as the page's) shared by a file's tests: what the page's images are compared with. */
export function loadTinyWasmEngine(): Promise<Engine> {
  const key = `wasm:${TINY_MODEL_DIR}`;
  let e = shared.get(key);
  if (!e) shared.set(key, (e = newTinyEngine({ runtime: wasmNodeRuntime() })));
  return e;
}

/** Largest per-channel difference between two RGBA images, in 0..255. */
export function maxPixelDiff(a: Uint8ClampedArray, b: Uint8ClampedArray): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
