// The page's engine client against a worker that cannot start its engine
// again (Comlink over a real MessageChannel, as between the page and its worker).
import * as Comlink from 'comlink';
import { describe, expect, it } from 'vitest';
import { EngineClient } from '../../src/lib/engine-client.svelte.ts';

/** A worker whose engine refuses to start, the way the real worker's init() rejects (a wire error). */
function refusingWorker(): Worker {
  const { port1, port2 } = new MessageChannel();
  Comlink.expose(
    {
      init: async () => {
        throw { name: 'ModelLoadError', code: 'model_load', message: 'could not load onnxruntime-web: its wasm file was not found' };
      },
    },
    port2,
  );
  return Object.assign(port1, { terminate: () => port1.close() }) as unknown as Worker;
}

describe('engine client', () => {
  it('a restart whose new worker cannot start keeps that failure in the banner, after the reason for the restart', async () => {
    const client = new EngineClient({ spawn: refusingWorker, source: { kind: 'url', url: 'http://127.0.0.1/models/tiny-sd3/' } });
    await client.restart('the engine worker crashed');
    expect(client.banner).toBe('the engine worker crashed; the engine could not start again: could not load onnxruntime-web: its wasm file was not found');
    expect(client.restarts).toBe(1);
    client.stop();
  });
});
