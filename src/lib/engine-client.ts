// The one place that knows about the worker: spawns it and wraps it with Comlink.
import * as Comlink from 'comlink';
import type { WorkerApi } from '../../workers/worker-api.ts';

export type EngineClient = Comlink.Remote<WorkerApi>;

export function spawnEngineWorker(): { client: EngineClient; worker: Worker } {
  const worker = new Worker(new URL('../../workers/engine.worker.ts', import.meta.url), { type: 'module', name: 'sd3-engine' });
  return { client: Comlink.wrap<WorkerApi>(worker), worker };
}

export { Comlink };
