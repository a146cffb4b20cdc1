// An ONNX graph names its external data by a `location` that whoever made the
// model wrote. One pointing outside the model folder (`../`, an absolute path,
// the URL parser's `%2e%2e` or `\`) is refused at planning, for every source,
// naming the graph and the location; nothing outside the folder is asked for.
import { cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../../workers/engine/errors.ts';
import { staysInFolder } from '../../workers/engine/model/confine.ts';
import { planModel } from '../../workers/engine/model/load-model.ts';
import type { ModelFiles } from '../../workers/engine/model/model-files.ts';
import { nodeFolderFiles } from '../../workers/engine/model/node-folder-files.ts';
import { Reader, readFields, readString, WIRE, Writer, type Field } from '../../workers/engine/model/protobuf.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

/** The graph with every external-data `location` set to `location`, every other byte copied (our own protobuf reader and writer). */
function relocate(model: Uint8Array, location: string): Uint8Array {
  const rebuild = (start: number, end: number, edit: (f: Field) => Writer | null): Writer => {
    const w = new Writer();
    new Reader(model, start, end).fields((f) => {
      const replaced = f.wire === WIRE.LEN ? edit(f) : null;
      if (replaced) w.message(f.field, replaced);
      else w.raw(model.subarray(f.start, f.end));
    });
    return w;
  };
  const isLocation = (entry: Field) => readFields(model, entry.dataStart, entry.dataEnd).some((k) => k.field === 1 && readString(model, k) === 'location');
  // ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto.external_data (13) -> StringStringEntryProto value (2)
  return rebuild(0, model.length, (m) =>
    m.field !== 7
      ? null
      : rebuild(m.dataStart, m.dataEnd, (g) =>
          g.field !== 5
            ? null
            : rebuild(g.dataStart, g.dataEnd, (t) =>
                t.field !== 13 || !isLocation(t) ? null : rebuild(t.dataStart, t.dataEnd, (kv) => (kv.field === 2 ? new Writer() : null)).string(2, location),
              ),
        ),
  ).finish();
}

/** A source that records every path asked of it. */
function recording(files: ModelFiles, asked: string[]): ModelFiles {
  return {
    id: files.id,
    read: (p, o) => (asked.push(p), files.read(p, o)),
    size: (p) => (asked.push(p), files.size(p)),
    exists: (p) => (asked.push(p), files.exists(p)),
    list: () => files.list!(),
  };
}

describe('external data stays in the model folder', () => {
  let root: string;
  let model: string;
  let graph: Uint8Array;
  const graphPath = () => join(model, 'transformer', 'model.onnx');

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-confine-'));
    model = join(root, 'model');
    await cp(TINY_MODEL_EXTERNAL_DIR, model, { recursive: true });
    graph = new Uint8Array(await readFile(graphPath()));
    // the secret beside the folder is the real weights: following the location would load
    await cp(join(model, 'transformer', 'model.onnx_data'), join(root, 'secret.data'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a location inside the folder, in a subfolder, loads and generates (the rewritten graph is sound)', async () => {
    await mkdir(join(model, 'transformer', 'weights'));
    await rename(join(model, 'transformer', 'model.onnx_data'), join(model, 'transformer', 'weights', 'all.data'));
    await writeFile(graphPath(), relocate(graph, 'weights/all.data'));
    const plan = await planModel(nodeFolderFiles(model), { backend: 'wasm' });
    expect(plan.components.get('transformer')!.data).toEqual([{ location: 'weights/all.data', path: 'transformer/weights/all.data', size: 458752 }]);
    const engine = createNodeEngine();
    try {
      await engine.load({ kind: 'path', path: model });
      const image = await engine.generate({ id: 'inside', prompt: 'a fox', seed: 1, steps: 1, width: 32, height: 32 });
      expect([image.width, image.height, image.rgba.length]).toEqual([32, 32, 32 * 32 * 4]);
    } finally {
      await engine.unload();
      await rename(join(model, 'transformer', 'weights', 'all.data'), join(model, 'transformer', 'model.onnx_data'));
    }
  });

  it('`../`, an absolute path, `%2e%2e` and `\\` are refused naming the graph and the location; the secret is never asked for', async () => {
    const secret = join(root, 'secret.data');
    for (const location of ['../secret.data', secret, 'weights/../../secret.data', '%2e%2e/secret.data', '..\\secret.data', 'file:///etc/passwd']) {
      await writeFile(graphPath(), relocate(graph, location));
      const asked: string[] = [];
      const err = await planModel(recording(nodeFolderFiles(model), asked), { backend: 'wasm' }).catch((e: unknown) => e);
      expect(err, location).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).file).toBe('transformer/model.onnx');
      expect((err as Error).message).toBe(`could not load transformer/model.onnx: its external data location "${location}" is outside the model folder; refused, nothing outside it is read`);
      expect(asked.filter((p) => p.includes('secret'))).toEqual([]);
    }
    // and through the engine, as the CLI loads a folder
    await writeFile(graphPath(), relocate(graph, '../secret.data'));
    const engine = createNodeEngine();
    await expect(engine.load({ kind: 'path', path: model })).rejects.toMatchObject({ code: 'model_load', file: 'transformer/model.onnx', message: expect.stringContaining('"../secret.data" is outside the model folder') });
    await writeFile(graphPath(), graph);
  });

  it('a folder on disk refuses any path that resolves outside it', async () => {
    const files = nodeFolderFiles(model);
    await expect(files.read('../secret.data')).rejects.toThrow(`could not load ../secret.data: it is outside the model folder ${model}; refused`);
    await expect(files.size(join(root, 'secret.data'))).rejects.toBeInstanceOf(ModelLoadError);
    expect(await files.size('transformer/../transformer/model.onnx')).toBe(graph.byteLength);
  });

  it('which names stay in the folder', () => {
    for (const ok of ['model.onnx_data', 'weights/a.bin', './a.bin', 'a..b', '...', 'x/..y/z']) expect(staysInFolder(ok), ok).toBe(true);
    for (const bad of ['', '..', '../a', 'a/../../b', '/etc/passwd', '\\\\server\\share', 'C:\\w.bin', 'c:w.bin', '%2E%2e/a', '.%2e/a', 'a\\..\\..\\b', 'https://evil.example/w.bin']) expect(staysInFolder(bad), bad).toBe(false);
  });
});
