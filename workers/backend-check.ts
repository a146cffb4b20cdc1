// Runs one component on the webgpu and wasm providers with the same inputs
// and reports how far apart the outputs are: the foundation's proof that the
// WebGPU path computes what the CPU path computes.
import type { InferenceSession, Tensor } from 'onnxruntime-web';
import { gpuDevice, onnxRuntime, type Ort } from './browser-engine.ts';
import { UrlModelFiles } from './engine/model/model-files.ts';
import { deviceQueue } from './engine/model/run-queue.ts';
import { RequestRng } from './engine/rng.ts';

export interface BackendCheck {
  component: string;
  maxAbsDiff: number;
  maxAbs: number;
  finite: boolean;
  shape: readonly number[];
  webgpuMs: { create: number; firstRun: number; secondRun: number };
  wasmMs: { create: number; run: number };
}

/** Feeds for the SD3 transformer at batch 2 with two different timesteps. */
function transformerFeeds(ort: Ort, config: Record<string, number>, side: number): Record<string, Tensor> {
  const rng = new RequestRng(1234);
  const C = config.in_channels ?? 16;
  const joint = config.joint_attention_dim;
  const pooled = config.pooled_projection_dim;
  const seq = 77 + 16;
  return {
    hidden_states: new ort.Tensor('float32', rng.normal(2 * C * side * side), [2, C, side, side]),
    encoder_hidden_states: new ort.Tensor('float32', rng.normal(2 * seq * joint), [2, seq, joint]),
    pooled_projections: new ort.Tensor('float32', rng.normal(2 * pooled), [2, pooled]),
    timestep: new ort.Tensor('float32', Float32Array.from([1000, 250]), [2]),
  };
}

export async function checkTransformerOnBackends(modelUrl: string, latentSide = 8): Promise<BackendCheck> {
  const { ort } = await onnxRuntime();
  const files = new UrlModelFiles(modelUrl);
  const graph = await files.read('transformer/model.onnx');
  const config = JSON.parse(new TextDecoder().decode(await files.read('transformer/config.json')));
  const feeds = transformerFeeds(ort, config, latentSide);
  const time = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
    const t = performance.now();
    const r = await f();
    return [r, performance.now() - t];
  };
  // the engine may be loading or running: share its queue, one onnxruntime call at a time
  const queue = deviceQueue(ort);
  const runOn = async (ep: 'webgpu' | 'wasm') => {
    // timed inside the queue, so waiting for the engine does not count
    const [session, create] = await queue.run(() => time(() => ort.InferenceSession.create(graph, { executionProviders: [ep === 'webgpu' ? ({ name: 'webgpu', device: gpuDevice() } as { name: 'webgpu' }) : ep] })));
    const run = () => queue.run(() => time(() => session.run(feeds) as Promise<InferenceSession.ReturnType>));
    const [first, firstRun] = await run();
    const [second, secondRun] = await run();
    const data = Float32Array.from(second.out_hidden_states.data as Float32Array);
    const shape = second.out_hidden_states.dims;
    for (const t of [...Object.values(first), ...Object.values(second)]) t.dispose();
    await queue.run(() => session.release());
    return { data, shape, create, firstRun, secondRun };
  };
  // one after the other: never two runs in flight
  const gpu = await runOn('webgpu');
  const cpu = await runOn('wasm');
  let maxAbsDiff = 0;
  let maxAbs = 0;
  let finite = true;
  for (let i = 0; i < cpu.data.length; i++) {
    finite &&= Number.isFinite(gpu.data[i]);
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(gpu.data[i] - cpu.data[i]));
    maxAbs = Math.max(maxAbs, Math.abs(cpu.data[i]));
  }
  return {
    component: 'transformer',
    maxAbsDiff,
    maxAbs,
    finite,
    shape: gpu.shape,
    webgpuMs: { create: gpu.create, firstRun: gpu.firstRun, secondRun: gpu.secondRun },
    wasmMs: { create: cpu.create, run: cpu.secondRun },
  };
}
