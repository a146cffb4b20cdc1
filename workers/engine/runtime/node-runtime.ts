// The one place that picks and configures onnxruntime for Node entries (CLI,
// server, benchmarks, tests). Native onnxruntime (onnxruntime-node) first: its
// GPU execution providers where this machine has them, then its CPU provider
// on every core; onnxruntime-web's wasm only when asked (it is 4-10x slower
// and its heap holds 4 GB at most). Each GPU provider is tried on a one-node
// graph with CPU fallback switched off, so "available" means it really ran.
// The page picks its runtime in workers/browser-engine.ts.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, platform, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import type { BackendName, RuntimeStatus } from '../api/types.ts';
import type { Ort } from '../model/component-session.ts';
import type { DeviceFit } from '../model/device-fit.ts';
// y = -x over 4 floats: the graph a provider must run with every node on it
import { FLUSH_GRAPH as PROBE_GRAPH } from '../engine.ts';

export const BACKEND_CHOICES = ['auto', 'cpu', 'webgpu', 'cuda', 'dml', 'coreml', 'wasm'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface NodeRuntime {
  ort: Ort;
  backend: BackendName;
  /** Session options native sessions are made with (threads, provider); absent on wasm. */
  native?: { sessionOptions: Record<string, unknown> };
  /** What the backend's memory is: the machine's RAM on CPU. */
  deviceFit: Partial<DeviceFit>;
  status: RuntimeStatus;
}

/** GPU execution providers onnxruntime-node can reach on this platform, fastest first. */
export function gpuProviders(os = platform()): BackendName[] {
  if (os === 'win32') return ['cuda', 'dml', 'webgpu'];
  if (os === 'darwin') return ['coreml', 'webgpu'];
  return ['cuda', 'webgpu'];
}

const require = createRequire(import.meta.url);
let nativeModule: Ort | null | undefined;

/** onnxruntime-node, or null (with why) where its binary does not load on this machine. */
function loadNative(): { ort: Ort } | { reason: string } {
  if (nativeModule === undefined) {
    try {
      nativeModule = require('onnxruntime-node') as Ort;
    } catch (e) {
      nativeModule = null;
      return { reason: `onnxruntime-node does not load here (${(e as Error).message.split('\n')[0]})` };
    }
  }
  return nativeModule ? { ort: nativeModule } : { reason: 'onnxruntime-node does not load here' };
}

/** Why a provider cannot run here, or null when it ran the probe with every node on it. */
async function probe(ort: Ort, backend: BackendName): Promise<string | null> {
  const listed = (ort as unknown as { listSupportedBackends?: () => { name: string; bundled: boolean }[] }).listSupportedBackends?.() ?? [];
  const entry = listed.find((b) => b.name === backend);
  if (!entry) return `onnxruntime-node ${ort.env.versions?.node ?? ''} has no ${backend} provider on ${platform()}-${process.arch}`.replace('  ', ' ');
  if (backend === 'cuda' && !entry.bundled) {
    const dir = join(dirname(require.resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', platform(), process.arch);
    const lib = platform() === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    if (!existsSync(join(dir, lib))) return `the CUDA provider is not installed (${lib} is absent: \`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install\` fetches it; CUDA 12 and cuDNN 9 must be on the library path)`;
  }
  try {
    const session = await ort.InferenceSession.create(PROBE_GRAPH, { executionProviders: [backend], logSeverityLevel: 4, extra: { session: { disable_cpu_ep_fallback: '1' } } } as never);
    try {
      const out = await session.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [4]) });
      const y = out.y.data as Float32Array;
      if (y[3] !== -4) return `the ${backend} provider ran the probe wrongly`;
    } finally {
      await session.release();
    }
    return null;
  } catch (e) {
    // onnxruntime's messages start with a source location: keep what it says
    const said = (e as Error).message.split('\n')[0].replace(/^.*? was false\. /, '').replace(/^\/onnxruntime_src\/\S+ /, '');
    return `the ${backend} provider did not start (${said.slice(0, 200)})`;
  }
}

function cpuName(): string {
  const model = cpus()[0]?.model?.trim() || 'unknown CPU';
  return `${model}, ${availableParallelism()} cores`;
}

/** onnxruntime-web's wasm in Node, on `threads` (default 1: results then match the page's wasm). */
export function wasmRuntime(ortWeb: Ort, threads = 1, choice: string = 'wasm', unavailable: RuntimeStatus['unavailable'] = []): NodeRuntime {
  ortWeb.env.wasm.numThreads = threads;
  ortWeb.env.logLevel = 'error';
  return { ort: ortWeb, backend: 'wasm', deviceFit: {}, status: { runtime: 'onnxruntime-web', backend: 'wasm', choice, threads, device: `wasm on ${cpuName()}`, unavailable } };
}

/** Native onnxruntime's CPU provider on `threads` (default: every core); no probe, so it is synchronous (tests, benchmarks). */
export function cpuRuntime(threads = availableParallelism(), choice: string = 'cpu', unavailable: RuntimeStatus['unavailable'] = []): NodeRuntime {
  const native = loadNative();
  if ('reason' in native) throw new Error(`--backend cpu: ${native.reason}`);
  native.ort.env.logLevel = 'error';
  return {
    ort: native.ort,
    backend: 'cpu',
    native: { sessionOptions: nativeSessionOptions('cpu', threads) },
    // the host's memory holds weights and activations alike
    deviceFit: { memoryBytes: totalmem() },
    status: { runtime: 'onnxruntime-node', backend: 'cpu', choice, threads, device: `CPU: ${cpuName()}`, unavailable },
  };
}

const nativeSessionOptions = (backend: BackendName, threads: number) => ({ executionProviders: [backend], intraOpNumThreads: threads, interOpNumThreads: 1 });

/**
 * The runtime for `choice`: 'auto' takes the first GPU provider that runs here, then native CPU, then wasm;
 * a named backend is that one or an error saying why it cannot run. CPU and wasm compute on `threads`
 * (default: every core natively, one on wasm, where results then match the page's).
 */
export async function nodeRuntime(choice: BackendChoice = 'auto', opts: { threads?: number } = {}): Promise<NodeRuntime> {
  const unavailable: { backend: string; reason: string }[] = [];
  const native = loadNative();
  const wasm = async () => wasmRuntime((await import('onnxruntime-web')) as unknown as Ort, opts.threads, choice, unavailable);
  if (choice === 'wasm') return wasm();
  if ('reason' in native) {
    if (choice !== 'auto') throw new Error(`--backend ${choice}: ${native.reason}`);
    unavailable.push({ backend: 'native', reason: native.reason });
    return wasm();
  }
  const ort = native.ort;
  ort.env.logLevel = 'error';
  const threads = opts.threads ?? availableParallelism();
  const gpus = choice === 'auto' ? gpuProviders() : choice === 'cpu' ? [] : [choice];
  for (const backend of gpus) {
    const reason = await probe(ort, backend);
    if (reason === null) {
      const device = backend === 'webgpu' ? "WebGPU through onnxruntime's own Dawn" : backend === 'cuda' ? 'CUDA device 0' : backend === 'dml' ? 'DirectML default adapter' : 'Core ML';
      // the GPU's own memory is not known here: the --gpu-memory setting (8 GB unless told) is the budget;
      // onnxruntime's Dawn grants shader-f16 on every GPU that has it, which native WebGPU users have
      const deviceFit: Partial<DeviceFit> = backend === 'webgpu' ? { features: ['shader-f16'] } : {};
      return { ort, backend, native: { sessionOptions: nativeSessionOptions(backend, threads) }, deviceFit, status: { runtime: 'onnxruntime-node', backend, choice, threads, device, unavailable } };
    }
    if (choice !== 'auto') throw new Error(`--backend ${choice}: ${reason}`);
    unavailable.push({ backend, reason });
  }
  return cpuRuntime(threads, choice, unavailable);
}

/** The status line CLI and server print first: the backend and why each faster one was not used. */
export function describeRuntime(s: RuntimeStatus): string {
  const why = unavailableReasons(s);
  return `backend ${s.backend} (${s.runtime}, ${s.threads} thread${s.threads === 1 ? '' : 's'}; ${s.device})${why ? `; not used: ${why}` : ''}`;
}

/** Each faster backend not used and why, in one line ('' when none was passed over). */
export const unavailableReasons = (s: RuntimeStatus): string => s.unavailable.map((u) => `${u.backend}: ${u.reason}`).join('; ');
