// The layouts and names published SD3 exports use (../shared/REAL-EXPORTS.md),
// made from the tiny model our builder writes: AMD's variant folders with
// unet/ and no model_index.json or scheduler/, Amuse's root without configs
// for its pipeline or tokenizers, TensorStack's `out_sample` and input order
// with int32 T5 ids. Each generates, through the real engine on wasm, the
// same pixels as the Optimum-layout original.
import { cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, GenerateResult, ModelInfo, ModelSourceSpec } from '../../workers/engine/api/types.ts';
import { findAttention } from '../../workers/engine/model/attention-chunks.ts';
import { graphIoTypes, MODEL, summarizeGraph, transformerShapes } from '../../workers/engine/model/graph-info.ts';
import { graphSkeletonFromStream } from '../../workers/engine/model/graph-stream.ts';
import { planModel } from '../../workers/engine/model/load-model.ts';
import type { ModelFiles } from '../../workers/engine/model/model-files.ts';
import { nodeFolderFiles } from '../../workers/engine/model/node-folder-files.ts';
import { readFields, readString, Reader, WIRE, Writer, type Field } from '../../workers/engine/model/protobuf.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { buildModel } from '../../tools/model-builder/build.ts';
import { FolderOutput } from '../../tools/model-builder/weight-store.ts';
import { tinySpec } from '../helpers/built-models.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { assembleLayout, REAL_EXPORTS_DIR as REAL, realLayouts } from '../helpers/real-exports.ts';
import { maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const { onnx } = onnxProto;
/** TensorProto.DataType INT32. */
const INT32 = 6;

/** Every setting given: a model without model_index.json has no tiny defaults of its own. */
const REQUEST: GenerateRequest = { prompt: 'a lighthouse at dusk', negativePrompt: 'fog', seed: 4242, steps: 3, guidance: 4.5, width: 64, height: 64 };

async function generate(spec: ModelSourceSpec): Promise<{ result: GenerateResult; info: ModelInfo }> {
  const engine = createNodeEngine();
  const info = await engine.load(spec);
  try {
    return { result: await engine.generate(REQUEST), info };
  } finally {
    await engine.unload();
  }
}

/** Renames tensors, reorders graph inputs and retypes inputs of one graph file, as other exporters write them. */
async function rewriteGraph(path: string, edit: { rename?: Record<string, string>; inputOrder?: string[] }): Promise<void> {
  const model = onnx.ModelProto.decode(await readFile(path));
  const graph = model.graph!;
  const renamed = (n: string) => edit.rename?.[n] ?? n;
  for (const node of graph.node!) {
    node.input = node.input!.map(renamed);
    node.output = node.output!.map(renamed);
  }
  for (const v of [...graph.input!, ...graph.output!]) v.name = renamed(v.name!);
  if (edit.inputOrder) graph.input = edit.inputOrder.map((n) => graph.input!.find((i) => i.name === n)!);
  await writeFile(path, onnx.ModelProto.encode(model).finish());
}

/** A graph input's element type changed in place, every other byte copied (our own protobuf reader and writer). */
async function retypeInput(path: string, input: string, elemType: number): Promise<void> {
  const model = new Uint8Array(await readFile(path));
  // rebuild one message: fields copied as they are, except those `edit` gives a new body for
  const rebuild = (start: number, end: number, edit: (f: Field) => Writer | null): Writer => {
    const w = new Writer();
    new Reader(model, start, end).fields((f) => {
      const replaced = f.wire === WIRE.LEN ? edit(f) : null;
      if (replaced) w.message(f.field, replaced);
      else w.raw(model.subarray(f.start, f.end));
    });
    return w;
  };
  const nameOf = (f: Field) => readFields(model, f.dataStart, f.dataEnd).find((v) => v.field === 1);
  const out = rebuild(0, model.length, (m) =>
    m.field !== MODEL.graph
      ? null
      : rebuild(m.dataStart, m.dataEnd, (g) => {
          const name = g.field === 11 ? nameOf(g) : undefined;
          if (!name || readString(model, name) !== input) return null;
          // ValueInfoProto.type (2) -> TypeProto.tensor_type (1) -> elem_type (1)
          return rebuild(g.dataStart, g.dataEnd, (v) =>
            v.field !== 2 ? null : rebuild(v.dataStart, v.dataEnd, (t) => (t.field !== 1 ? null : rebuild(t.dataStart, t.dataEnd, () => null).int(1, elemType))),
          );
        }),
  ).finish();
  await writeFile(path, out);
}

/** ModelFiles without a listing: discovery must probe known paths. */
const withoutListing = (files: ModelFiles): ModelFiles => ({ id: files.id, read: (p, o) => files.read(p, o), exists: (p) => files.exists(p), size: (p) => files.size(p) });

describe('published layouts from the tiny model: the same pixels as the Optimum layout', () => {
  let root: string;
  let reference: GenerateResult;
  const amd = () => join(root, 'tiny-sd3_amdgpu');
  const amuse = () => join(root, 'tiny-sd3-amuse');
  const tensorstack = () => join(root, 'tiny-sd3-tensorstack');

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-layouts-'));
    reference = (await generate({ kind: 'path', path: TINY_MODEL_DIR })).result;

    // AMD: <name>_io32/ and <name>_io16/, unet/, external data in model.onnx.data, a 0-byte config.json, no model_index.json or scheduler/
    for (const io of ['float32', 'float16'] as const) {
      const dir = join(amd(), `tiny-sd3_io${io === 'float32' ? 32 : 16}`);
      buildModel(tinySpec({ weights: io, io, withVaeEncoder: false, dataFile: (f) => (f === 'transformer' || f === 'text_encoder_2' ? 'model.onnx.data' : null) }), new FolderOutput(dir));
      await rename(join(dir, 'transformer'), join(dir, 'unet'));
      await rm(join(dir, 'model_index.json'));
      await rm(join(dir, 'scheduler'), { recursive: true });
      await writeFile(join(dir, 'config.json'), '');
    }

    // Amuse: the root holds the components, no model_index.json, no scheduler/, no tokenizer_config.json
    await cp(TINY_MODEL_DIR, amuse(), { recursive: true });
    await rm(join(amuse(), 'model_index.json'));
    await rm(join(amuse(), 'scheduler'), { recursive: true });
    for (const t of ['tokenizer', 'tokenizer_2', 'tokenizer_3']) await rm(join(amuse(), t, 'tokenizer_config.json'));

    // TensorStack's Olive export: unet/, output out_sample, inputs (hidden_states, timestep, encoder_hidden_states, pooled_projections), T5 ids int32
    await cp(TINY_MODEL_DIR, tensorstack(), { recursive: true });
    await rename(join(tensorstack(), 'transformer'), join(tensorstack(), 'unet'));
    await rewriteGraph(join(tensorstack(), 'unet', 'model.onnx'), { rename: { out_hidden_states: 'out_sample' }, inputOrder: ['hidden_states', 'timestep', 'encoder_hidden_states', 'pooled_projections'] });
    await retypeInput(join(tensorstack(), 'text_encoder_3', 'model.onnx'), 'input_ids', INT32);
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('AMD: the io32 variant is found under the repo folder and chosen on wasm; unet/ is the transformer', async () => {
    const { result, info } = await generate({ kind: 'path', path: amd() });
    expect(maxPixelDiff(result.rgba, reference.rgba)).toBe(0);
    expect(info.layout).toMatchObject({ root: 'tiny-sd3_io32', variant: 'io32', transformerFolder: 'unet' });
    expect(info.layout!.configSources).toMatchObject({ 'model_index.json': expect.stringMatching(/^absent/), 'scheduler/scheduler_config.json': expect.stringMatching(/^SD3 defaults .*shift 3\.0/), 'unet/config.json': 'file' });
    expect(info.layout!.summary).toMatch(/variant folder tiny-sd3_io32 \(io32: float32 inputs and outputs for the wasm backend; found: tiny-sd3_io16, tiny-sd3_io32\); transformer in unet\//);
  });

  it('AMD: the variant follows the device (io16 only where WebGPU has shader-f16), found by listing or by probing', async () => {
    const files = nodeFolderFiles(amd());
    const variantFor = async (f: ModelFiles, backend: 'wasm' | 'webgpu', features: string[]) => (await planModel(f, { backend, fit: { features } })).layout;
    expect(await variantFor(files, 'webgpu', ['shader-f16'])).toMatchObject({ root: 'tiny-sd3_io16', variant: 'io16', discovery: 'listing' });
    expect(await variantFor(files, 'webgpu', [])).toMatchObject({ root: 'tiny-sd3_io32', variantReason: 'io32: this WebGPU adapter lacks shader-f16' });
    // a source that cannot list (a plain URL): the repo name gives the variant folders' names
    expect(await variantFor(withoutListing(files), 'webgpu', ['shader-f16'])).toMatchObject({ root: 'tiny-sd3_io16', discovery: 'probing' });
    // named by the user: the variant folder itself is the source
    const named = await planModel(nodeFolderFiles(join(amd(), 'tiny-sd3_io16')), { backend: 'wasm' });
    expect(named.layout).toMatchObject({ root: '', variant: 'io16', variantReason: 'the io16 variant, named by the source' });
    expect(named.components.get('transformer')!.summary!.halfIO).toBe(true);
  });

  it('AMD: an empty transformer config on a graph of no published family is refused, naming the file and the shapes', async () => {
    const dir = join(root, 'tiny-empty-config');
    await cp(join(amd(), 'tiny-sd3_io32'), dir, { recursive: true });
    await writeFile(join(dir, 'unet', 'config.json'), '');
    const err = await planModel(nodeFolderFiles(dir), { backend: 'wasm' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'model_load', file: 'unet/config.json' });
    expect((err as Error).message).toMatch(/missing or empty, and the transformer graph's shapes \(hidden 32, depth 2, patch 2, pos_embed 32, no dual attention, no qk norm\) match no published family/);
  });

  it('Amuse: no model_index.json, scheduler/ or tokenizer_config.json', async () => {
    const { result, info } = await generate({ kind: 'path', path: amuse() });
    expect(maxPixelDiff(result.rgba, reference.rgba)).toBe(0);
    expect(info.layout).toMatchObject({ root: '', variant: null, transformerFolder: 'transformer' });
    expect(info.layout!.configSources).toMatchObject({
      'tokenizer/tokenizer_config.json': 'CLIP defaults (bos/eos/pad, 77 tokens)',
      'tokenizer_2/tokenizer_config.json': 'CLIP defaults (bos/eos/pad, 77 tokens)',
      'tokenizer_3/tokenizer_config.json': 'T5 defaults',
      'transformer/config.json': 'file',
    });
  });

  it("TensorStack's names: unet/, out_sample, inputs in another order, int32 T5 ids", async () => {
    const { result, info } = await generate({ kind: 'path', path: tensorstack() });
    expect(maxPixelDiff(result.rgba, reference.rgba)).toBe(0);
    expect(info.layout!.transformerFolder).toBe('unet');
    const t5 = graphIoTypes(new Uint8Array(await readFile(join(tensorstack(), 'text_encoder_3', 'model.onnx'))));
    expect(t5.find((v) => v.name === 'input_ids')!.elemType).toBe(INT32);
  });

  it('a graph that cannot be matched names the file and the tensor', async () => {
    const dir = join(root, 'tiny-bad-names');
    await cp(tensorstack(), dir, { recursive: true });
    await rewriteGraph(join(dir, 'unet', 'model.onnx'), { rename: { pooled_projections: 'pooled' } });
    await rewriteGraph(join(dir, 'text_encoder', 'model.onnx'), { rename: { text_embeds: 'pooled_out' } });
    const err = await planModel(nodeFolderFiles(dir), { backend: 'wasm' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'model_load', file: 'text_encoder/model.onnx' });
    expect((err as Error).message).toMatch(/has no output text_embeds \(outputs: pooled_out, last_hidden_state, hidden_states\.0, hidden_states\.1, hidden_states\.2\); the names known for it: text_embeds, pooler_output/);
    await rewriteGraph(join(dir, 'text_encoder', 'model.onnx'), { rename: { pooled_out: 'text_embeds' } });
    const unet = await planModel(nodeFolderFiles(dir), { backend: 'wasm' }).catch((e: unknown) => e);
    expect(unet).toMatchObject({ code: 'model_load', file: 'unet/model.onnx' });
    expect((unet as Error).message).toMatch(/has no input pooled_projections \(inputs: hidden_states, timestep, encoder_hidden_states, pooled\)/);
  });

  describe('served in the Hub layout', () => {
    let server: ModelServer;
    beforeAll(async () => {
      server = await startModelServer({ repos: [{ repo: 'acme/tiny-sd3_amdgpu', folder: amd() }] });
    });
    afterAll(async () => server?.close());

    it('AMD from a Hub repo: the variant folder is found through the repo listing, and the pixels are the same', async () => {
      const { result, info } = await generate({ kind: 'hub', repo: 'acme/tiny-sd3_amdgpu', host: server.url });
      expect(maxPixelDiff(result.rgba, reference.rgba)).toBe(0);
      expect(info.layout).toMatchObject({ root: 'tiny-sd3_io32', transformerFolder: 'unet' });
      // only the chosen variant's files were downloaded
      const gets = server.requests.filter((r) => r.method === 'GET' && r.path.includes('/resolve/')).map((r) => r.path);
      expect(gets.some((p) => p.includes('tiny-sd3_io32/unet/model.onnx'))).toBe(true);
      expect(gets.filter((p) => p.includes('_io16/'))).toEqual([]);
    });
  });
});

describe('planning inline graphs by streaming past their weights', () => {
  it('the skeleton of a graph read in small chunks tells what the whole graph tells, in a fraction of its bytes', async () => {
    const model = new Uint8Array(await readFile(join(TINY_MODEL_DIR, 'transformer', 'model.onnx')));
    async function* chunks() {
      for (let at = 0; at < model.length; at += 997) yield model.subarray(at, at + 997);
    }
    const skeleton = await graphSkeletonFromStream(chunks());
    expect(skeleton.byteLength).toBeLessThan(model.byteLength / 4);
    expect(summarizeGraph(skeleton)).toEqual(summarizeGraph(model));
    expect(graphIoTypes(skeleton)).toEqual(graphIoTypes(model));
    expect(transformerShapes(skeleton)).toEqual(transformerShapes(model));
    expect(findAttention(skeleton)).toEqual(findAttention(model));
    expect(findAttention(skeleton).length).toBe(2);
  });

  it('a truncated or foreign file is refused, naming it', async () => {
    const model = new Uint8Array(await readFile(join(TINY_MODEL_DIR, 'transformer', 'model.onnx')));
    const one = async function* (b: Uint8Array) {
      yield b;
    };
    await expect(graphSkeletonFromStream(one(model.subarray(0, model.length - 100)))).rejects.toThrow(/truncated/);
    await expect(graphSkeletonFromStream(one(new TextEncoder().encode('{"not": "onnx"}')))).rejects.toThrow();
  });

  it('a graph over the read limit is planned from its stream: attention sites and chunks found, no copy kept', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd3-stream-plan-'));
    try {
      await mkdir(dir, { recursive: true });
      await cp(TINY_MODEL_DIR, dir, { recursive: true });
      const streamed: string[] = [];
      const files = nodeFolderFiles(dir);
      // a source with stream(): the planner must take it rather than read the whole file
      const streaming: ModelFiles = {
        ...files,
        id: files.id,
        read: (p, o) => files.read(p, o),
        exists: (p) => files.exists(p),
        size: (p) => files.size(p),
        async *stream(p) {
          streamed.push(p);
          const bytes = await files.read(p);
          for (let at = 0; at < bytes.length; at += 64 * 1024) yield bytes.subarray(at, at + 64 * 1024);
        },
      };
      const plan = await planModel(streaming, { backend: 'wasm', planReadMaxBytes: 64 * 1024 });
      const transformer = plan.components.get('transformer')!;
      expect(transformer.graph).toBeNull();
      expect(streamed).toContain('transformer/model.onnx');
      expect(transformer.attentionSites).toBe(2);
      expect(transformer.summary!.largestTensorBytes).toBeGreaterThan(64 * 1024);
      expect(plan.transformerConfig.numLayers).toBe(transformerShapes(await files.read('transformer/model.onnx')).depth);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** The same layouts assembled from exports made by real tools (torch.onnx, onnxruntime's optimizer and fp16 converter): tools/fixtures/. */
describe.skipIf(!Object.keys(realLayouts).length)('published layouts assembled from real exports: the same pixels as the Optimum folder they come from', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-real-layouts-'));
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it.each(Object.keys(realLayouts))('%s', async (name) => {
    const files = realLayouts[name];
    const dir = await assembleLayout(name, join(root, name));
    // the Optimum folder most of its files come from
    const counts = new Map<string, number>();
    for (const from of Object.values(files)) if (from) counts.set(from.split('/')[0], (counts.get(from.split('/')[0]) ?? 0) + 1);
    // (AMD's two variants tie: the io32 one is what wasm takes)
    const base = [...counts].sort((a, b) => b[1] - a[1] || Number(/io32/.test(b[0])) - Number(/io32/.test(a[0])))[0][0];
    const request = { ...REQUEST, steps: 2 };
    const generateIn = async (spec: ModelSourceSpec) => {
      const engine = createNodeEngine();
      const info = await engine.load(spec);
      try {
        return { info, rgba: (await engine.generate(request)).rgba };
      } finally {
        await engine.unload();
      }
    };
    const expected = await generateIn({ kind: 'path', path: join(REAL, base) });
    const got = await generateIn({ kind: 'path', path: dir });
    expect(maxPixelDiff(got.rgba, expected.rgba)).toBeLessThanOrEqual(1);
    const variants = Object.keys(files).filter((p) => /_io(16|32)\//.test(p));
    if (variants.length) expect(got.info.layout).toMatchObject({ variant: 'io32', root: expect.stringMatching(/_io32$/) });
    if (Object.keys(files).some((p) => p.includes('unet/'))) expect(got.info.layout!.transformerFolder).toBe('unet');
  });
});
