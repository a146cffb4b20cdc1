// Real-size paths at tiny size, in Chromium: the JSPI build streams external
// data from disk-backed Blobs; an fp16-I/O model runs through the page (on
// wasm: SwiftShader has no shader-f16, and WebGPU runs the casts on the GPU,
// so there it is refused by name); attention cut into query chunks (as at
// 1024² on a 1 GiB adapter) gives the same image on WebGPU; a download cut
// mid-file resumes with a Range request. Full-size runs are in
// `npm run test:scale` and `npm run bench -- --scale`.
import { decode } from 'fast-png';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { GenerateRequest, ImageMetadata, ModelInfo, ModelSourceSpec } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import type { LoadModelOptions } from '../../workers/engine/engine.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { buildTemp, tinySpec, type BuiltModel } from '../helpers/built-models.ts';
import { servedCommit, startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { loadTinyWasmEngine, maxPixelDiff, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, type BrowserSession } from './chromium.ts';

interface Api {
  loadModel(source: ModelSourceSpec, onProgress?: unknown, opts?: LoadModelOptions): Promise<ModelInfo>;
  generate(request: GenerateRequest): Promise<{ id: string; metadata: ImageMetadata }>;
  getImage(id: string): Promise<{ png: Blob }>;
  status(): Promise<{ gpu: { runtime: string; backend: string }; gpuMemory: { liveBytes: number; peakBytes: number; largestBufferBytes: number } | null; weightBytes: number }>;
}

describe('real-size paths in the page', () => {
  let b: BrowserSession;
  let wasm: BrowserSession;
  let server: ModelServer;
  let io16: BuiltModel;

  beforeAll(async () => {
    io16 = await buildTemp(tinySpec({ io: 'float16', dataFile: (f) => (f === 'transformer' ? 'model.onnx_data' : null) }));
    server = await startModelServer({ repos: [{ repo: 'acme/tiny-io16', folder: io16.dir }, { repo: 'acme/tiny', folder: TINY_MODEL_EXTERNAL_DIR }] });
    b = await openApp(inject('baseUrl'), 'webgpu');
    wasm = await openApp(inject('baseUrl'));
  });
  afterAll(async () => {
    await b?.close();
    await wasm?.close();
    await server?.close();
    await io16?.remove();
  });

  /** Loads through the worker's API, generates one image, returns its pixels. */
  const generateIn = async (session: BrowserSession, source: ModelSourceSpec, request: GenerateRequest, opts: LoadModelOptions = {}) => {
    const r = await session.page.evaluate(
      async ({ source, request, opts }) => {
        const api = (window as unknown as { __engine: Api }).__engine;
        try {
          const info = await api.loadModel(source, undefined, opts);
          const { id, metadata } = await api.generate(request);
          const png = new Uint8Array(await (await api.getImage(id)).png.arrayBuffer());
          return { info, metadata, png: Array.from(png) };
        } catch (e) {
          return { error: e as { code?: string; file?: string; message: string } }; // a worker error arrives as a plain object
        }
      },
      { source, request, opts },
    );
    return r;
  };
  const pixels = (png: number[]) => {
    const img = decode(Uint8Array.from(png));
    return new Uint8ClampedArray(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  };
  const hub = (repo: string): ModelSourceSpec => ({ kind: 'hub', repo, host: server.url });

  it("runs the JSPI build (external data streamed from Blobs) on the app's own GPU device, whose buffers it counts", async () => {
    const status = await b.page.evaluate(() => (window as unknown as { __engine: Api }).__engine.status());
    expect(status.gpu).toMatchObject({ runtime: 'jspi', backend: 'webgpu' });
    // onnxruntime's weights live in buffers of our device: were it making its own device, this would be 0
    expect(status.gpuMemory!.liveBytes).toBeGreaterThanOrEqual(0.9 * status.weightBytes);
    expect(status.gpuMemory!.largestBufferBytes).toBeGreaterThanOrEqual(32 * 32 * 32 * 4); // at least the transformer's positional table
  });

  it('an fp16-I/O model generates in the page as in Node; on WebGPU without shader-f16 it is refused by name', async () => {
    const request = { prompt: 'half precision at the edges', seed: 12, steps: 2, guidance: 4.5 };
    const page = await generateIn(wasm, hub('acme/tiny-io16'), request);
    if ('error' in page) throw new Error(JSON.stringify(page.error));
    expect(page.metadata).toMatchObject({ backend: 'wasm', modelId: 'acme/tiny-io16' });
    const node: Engine = createNodeEngine();
    await node.load({ kind: 'path', path: io16.dir });
    const ref = await node.generate(request);
    expect(maxPixelDiff(pixels(page.png), ref.rgba)).toBeLessThanOrEqual(1);
    // and within a few levels of the fp32-I/O twin: the casts are the only difference
    const full = await (await loadTinyWasmEngine()).generate(request);
    expect(maxPixelDiff(pixels(page.png), full.rgba)).toBeLessThanOrEqual(8);
    await node.unload();

    const refused = await generateIn(b, hub('acme/tiny-io16'), request);
    expect(refused).toMatchObject({ error: { code: 'model_load', file: 'text_encoder/model.onnx' } });
    expect((refused as { error: { message: string } }).error.message).toMatch(/float16 inputs and outputs, but this GPU adapter does not offer the shader-f16 feature/);
  });

  it('attention cut into query chunks for small buffers gives the image of the whole attention', async () => {
    const request = { prompt: 'chunked attention on the gpu', seed: 13, steps: 2, guidance: 4.5 };
    const page = await generateIn(b, hub('acme/tiny'), request, { fit: { maxBufferBytes: 300 * 1024 } });
    if ('error' in page) throw new Error(JSON.stringify(page.error));
    expect(page.info.attentionChunks.transformer).toBe(4);
    expect(page.metadata.backend).toBe('webgpu');
    const ref = await (await loadTinyWasmEngine()).generate(request);
    expect(maxPixelDiff(pixels(page.png), ref.rgba)).toBeLessThanOrEqual(3);
  });

  it('a download cut in the middle of a file resumes with a Range request', async () => {
    const path = '/acme/tiny/resolve/main/transformer/model.onnx_data';
    server.faults.set(path, { truncateAt: 200_000, times: 1 });
    server.requests.length = 0;
    const err = await b.page.evaluate(async (url) => {
      // a fresh download: drop what the earlier tests stored
      for (const name of await caches.keys()) await caches.delete(name);
      try {
        await (window as unknown as { __engine: Api }).__engine.loadModel({ kind: 'hub', repo: 'acme/tiny', host: url });
        return null;
      } catch (e) {
        return e;
      }
    }, server.url);
    expect(err).toBeNull();
    // files come by the commit the revision resolved to
    const atCommit = path.replace('/resolve/main/', `/resolve/${servedCommit({ repo: 'acme/tiny', folder: '' })}/`);
    const gets = server.requests.filter((r) => r.method === 'GET' && r.path === atCommit);
    expect(gets.map((r) => [r.range ?? null, r.status])).toEqual([[null, 200], ['bytes=200000-', 206]]);
    // stored whole: the next load (other options, so a real load, not the no-op of the same one) reads every
    // file from the cache; only the revision is asked, to find its commit
    server.requests.length = 0;
    await b.page.evaluate((url) => (window as unknown as { __engine: Api }).__engine.loadModel({ kind: 'hub', repo: 'acme/tiny', host: url }, undefined, { fit: { maxBufferBytes: 400 * 1024 } }), server.url);
    expect(server.requests.map((r) => r.path)).toEqual(['/api/models/acme/tiny/revision/main']);
  });
});
