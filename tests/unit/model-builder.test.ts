// The model builder's presets at their published sizes, and its variants:
// fp16 weights or I/O, reduced depth, sharded or single-file external data
// (over 2 GB), fused attention, sparse data for plans. Full-size presets are
// built sparse here (holes, no weights), so this costs milliseconds.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModel, specFromArgs } from '../../tools/model-builder/build.ts';
import { PRESETS, withDepth } from '../../tools/model-builder/presets.ts';
import { MemoryOutput } from '../../tools/model-builder/weight-store.ts';
import { graphInitializers, graphNodes, ONNX_DTYPE } from '../../workers/engine/model/graph-info.ts';
import { buildTemp, type BuiltModel } from '../helpers/built-models.ts';

const M = 1e6;
const sparse = (preset: string, over: Partial<Parameters<typeof buildModel>[0]> = {}) =>
  buildTemp({ preset: PRESETS[preset], id: `synthetic/${preset}`, weights: 'float16', io: 'float16', attention: 'decomposed', dataFile: () => 'model.onnx_data', sparse: true, ...over });

describe('model builder presets', () => {
  const made: BuiltModel[] = [];
  afterAll(async () => {
    for (const b of made) await b.remove();
  });

  it('sd3-medium and sd3.5-medium have the published parameter counts per component', () => {
    const counts = (preset: string) => {
      const out = new MemoryOutput();
      return buildModel({ preset: PRESETS[preset], id: preset, weights: 'float16', io: 'float16', attention: 'decomposed', dataFile: () => 'model.onnx_data', sparse: true }, out);
    };
    const sd3 = counts('sd3-medium');
    const sd35 = counts('sd3.5-medium');
    // CLIP-L 124 M, OpenCLIP bigG 695 M, T5 v1.1 XXL encoder 4.76 B, SD3 VAE decoder 49.5 M
    expect(sd3.text_encoder.parameters / M).toBeCloseTo(123.7, 0);
    expect(sd3.text_encoder_2.parameters / M).toBeCloseTo(694.7, 0);
    expect(sd3.text_encoder_3.parameters / M).toBeCloseTo(4762.3, 0);
    expect(sd3.vae_decoder.parameters / M).toBeCloseTo(49.5, 0);
    // MMDiT 2.03 B and MMDiT-X 2.24 B, each with its positional table (192² and 384² x 1536)
    expect((sd3.transformer.parameters - 192 * 192 * 1536) / M).toBeCloseTo(2028.4, 0);
    expect((sd35.transformer.parameters - 384 * 384 * 1536) / M).toBeCloseTo(2243.2, 0);
    // fp16 bytes on disk: ~4.2 GB and ~4.9 GB, as the AMD exports of the real models are
    expect(sd3.transformer.bytes / 1e9).toBeCloseTo(4.17, 1);
    expect(sd35.transformer.bytes / 1e9).toBeCloseTo(4.94, 1);
  });

  it('writes one external data file over 2 GB, or shards that each stay under the shard size', async () => {
    const single = await sparse('sd3-medium', { weights: 'float32', io: 'float32', withT5: false, withVaeEncoder: false });
    made.push(single);
    const size = (await stat(join(single.dir, 'transformer/model.onnx_data'))).size;
    expect(size).toBeGreaterThan(2 * 1024 ** 3); // 8.3 GB in fp32: one file a browser can only stream
    const inits = graphInitializers(new Uint8Array(readFileSync(join(single.dir, 'transformer/model.onnx'))));
    expect(Math.max(...inits.map((t) => (t.external ? t.external.offset + t.external.length : 0)))).toBeLessThanOrEqual(size);

    const sharded = await sparse('sd3-medium', { weights: 'float32', io: 'float32', withT5: false, withVaeEncoder: false, shardBytes: 1024 ** 3 });
    made.push(sharded);
    const shards = (await readdir(join(sharded.dir, 'transformer'))).filter((f) => f.startsWith('model.onnx_data.')).sort();
    let total = 0;
    for (const s of shards) {
      const bytes = (await stat(join(sharded.dir, 'transformer', s))).size;
      expect(bytes).toBeLessThanOrEqual(1024 ** 3);
      total += bytes;
    }
    expect(total).toBe(size); // every tensor whole, each in one shard, the same alignment
    expect(shards.length).toBeGreaterThanOrEqual(Math.ceil(size / 1024 ** 3));
    const locations = new Set(graphInitializers(new Uint8Array(readFileSync(join(sharded.dir, 'transformer/model.onnx')))).flatMap((t) => (t.external ? [t.external.location] : [])));
    expect([...locations].sort()).toEqual(shards);
  });

  it('fp16 weights are float16 initializers; fused attention is com.microsoft.MultiHeadAttention; depth is reducible', async () => {
    const out = new MemoryOutput();
    buildModel({ preset: withDepth(PRESETS['sd3.5-medium'], { layers: 2, encoderLayers: 1, vaeLayers: 1 }), id: 'x', weights: 'float16', io: 'float16', attention: 'fused', dataFile: () => 'model.onnx_data', sparse: true, withT5: false }, out);
    const graph = out.files.get('transformer/model.onnx')!;
    const weights = graphInitializers(graph).filter((t) => !t.name.startsWith('const_'));
    expect(weights.length).toBeGreaterThan(50);
    expect(weights.every((t) => t.dataType === ONNX_DTYPE.FLOAT16)).toBe(true);
    const nodes = graphNodes(graph);
    // two blocks, both among MMDiT-X's first 13: joint attention and a second, image-only one in each
    expect(nodes.filter((n) => n.opType === 'MultiHeadAttention' && n.domain === 'com.microsoft')).toHaveLength(4);
    expect(nodes.filter((n) => n.opType === 'ReduceMean').length).toBeGreaterThanOrEqual(12); // qk RMSNorm: q, k, added q, added k, and attn2's q, k
    expect(JSON.parse(new TextDecoder().decode(out.files.get('transformer/config.json')!))).toMatchObject({ num_layers: 2, dual_attention_layers: [0, 1], qk_norm: 'rms_norm', pos_embed_max_size: 384 });
    expect(JSON.parse(new TextDecoder().decode(out.files.get('text_encoder_2/config.json')!))).toMatchObject({ num_hidden_layers: 1, hidden_size: 1280, projection_dim: 1280 });
    expect(out.files.has('text_encoder_3/model.onnx')).toBe(false);
  });

  it('the command line names a bad flag and the allowed values', () => {
    expect(() => specFromArgs(['--preset', 'sd4', '--out', 'x'])).toThrow(/--preset: expected one of tiny, sd3-medium, sd3\.5-medium, sd3\.5-large, sd3\.5-large-turbo, got sd4/);
    expect(() => specFromArgs(['--preset', 'tiny', '--out', 'x', '--weights', 'int8'])).toThrow(/--weights: expected fp32 or fp16, got int8/);
    expect(() => specFromArgs(['--preset', 'tiny', '--out', 'x', '--layers', '0'])).toThrow(/--layers: expected an integer >= 1, got 0/);
    expect(() => specFromArgs(['--preset', 'tiny'])).toThrow(/--out/);
    const { spec } = specFromArgs(['--preset', 'sd3-medium', '--out', 'x', '--weights', 'fp16', '--io', 'fp32', '--layers', '2', '--external', 'shards', '--shard-mb', '512']);
    expect(spec).toMatchObject({ weights: 'float16', io: 'float32', shardBytes: 512 * 1024 ** 2, id: 'sd3-webgpu/synthetic-sd3-medium-fp16-io-fp32-2l' });
    expect(spec.preset.transformer.layers).toBe(2);
  });
});
