// Re-shards an ONNX export's external data into files small enough for one
// browser buffer (Chrome cannot hold an ArrayBuffer over ~2 GB). Each tensor
// stays whole inside one shard; the graph's external-data entries are rewritten
// to point at `<data>.000`, `<data>.001`, … with new offsets. onnxruntime-web
// then takes the shards as separate `externalData` entries, which the loader
// finds in the graph like any other external data.
//
//   npm run reshard -- <model folder or component folder> [--max-shard-mb 1024]
//
// It copies one tensor at a time (file reads at an offset), so memory stays
// small whatever the export's size. The original data files are removed once
// the new graph is in place.
import { open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** A safe default well under the browser's ~2 GB buffer limit. */
export const DEFAULT_MAX_SHARD_BYTES = 1024 ** 3;
const ALIGN = 64;

export interface ReshardReport {
  component: string;
  shards: { file: string; bytes: number }[];
  tensors: number;
}

async function componentFolders(root: string): Promise<string[]> {
  const here = await stat(join(root, 'model.onnx')).then(
    () => true,
    () => false,
  );
  if (here) return [root];
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    if (e.isDirectory() && (await stat(join(root, e.name, 'model.onnx')).catch(() => null))) out.push(join(root, e.name));
  }
  return out.sort();
}

/** Re-shards one component folder; returns null when it has no external data. */
export async function reshardComponent(folder: string, maxShardBytes = DEFAULT_MAX_SHARD_BYTES): Promise<ReshardReport | null> {
  const graphPath = join(folder, 'model.onnx');
  const model = onnx.ModelProto.decode(await readFile(graphPath));
  const external = (model.graph?.initializer ?? []).filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
  if (!external.length) return null;

  const entry = (t: (typeof external)[number], key: string) => t.externalData?.find((e: { key?: string | null }) => e.key === key)?.value ?? undefined;
  const sources = [...new Set(external.map((t) => entry(t, 'location')!))];
  const base = sources[0].replace(/\.\d{3}$/, '');
  const handles = new Map(await Promise.all(sources.map(async (s) => [s, await open(join(folder, s), 'r')] as const)));
  const shards: { file: string; bytes: number }[] = [];
  let out: Awaited<ReturnType<typeof open>> | null = null;
  let offset = 0;
  const tmpNames: string[] = [];
  try {
    for (const t of external) {
      const location = entry(t, 'location')!;
      const from = Number(entry(t, 'offset') ?? 0);
      const src = handles.get(location)!;
      const length = Number(entry(t, 'length') ?? (await src.stat()).size - from);
      if (length > maxShardBytes) throw new Error(`${folder}: tensor ${t.name} is ${length} bytes, larger than a shard (${maxShardBytes}); raise --max-shard-mb`);
      if (!out || offset + length > maxShardBytes) {
        await out?.close();
        const file = `${base}.${String(shards.length).padStart(3, '0')}`;
        tmpNames.push(`${file}.tmp`);
        out = await open(join(folder, `${file}.tmp`), 'w');
        shards.push({ file, bytes: 0 });
        offset = 0;
      }
      const buf = Buffer.alloc(length);
      const { bytesRead } = await src.read(buf, 0, length, from);
      if (bytesRead !== length) throw new Error(`${folder}/${location}: expected ${length} bytes at ${from}, read ${bytesRead} (truncated file?)`);
      await out.write(buf, 0, length, offset);
      t.externalData = [
        { key: 'location', value: shards[shards.length - 1].file },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
      offset += length;
      shards[shards.length - 1].bytes = offset;
      offset += (ALIGN - (offset % ALIGN)) % ALIGN;
    }
  } catch (e) {
    await out?.close();
    out = null;
    for (const t of tmpNames) await rm(join(folder, t), { force: true }); // the export is left as it was
    throw e;
  } finally {
    await out?.close();
    for (const h of handles.values()) await h.close();
  }
  // swap in: shards under their names, then the graph, then drop the old data
  for (const s of shards) await rename(join(folder, `${s.file}.tmp`), join(folder, s.file));
  await writeFile(`${graphPath}.tmp`, onnx.ModelProto.encode(model).finish());
  await rename(`${graphPath}.tmp`, graphPath);
  const kept = new Set(shards.map((s) => s.file));
  for (const s of sources) if (!kept.has(s)) await rm(join(folder, s), { force: true });
  return { component: folder, shards, tensors: external.length };
}

export async function reshard(root: string, maxShardBytes = DEFAULT_MAX_SHARD_BYTES): Promise<ReshardReport[]> {
  const reports: ReshardReport[] = [];
  for (const folder of await componentFolders(resolve(root))) {
    const r = await reshardComponent(folder, maxShardBytes);
    if (r) reports.push(r);
  }
  return reports;
}

if (process.argv[1]?.endsWith('reshard.ts')) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'max-shard-mb': { type: 'string', default: '1024' } } });
  const mb = Number(values['max-shard-mb']);
  if (positionals.length !== 1 || !(mb > 0 && mb <= 2047)) {
    console.error('usage: npm run reshard -- <model folder or component folder> [--max-shard-mb N] (N in 1..2047)');
    process.exit(2);
  }
  for (const r of await reshard(positionals[0], mb * 1024 ** 2)) {
    console.log(`${r.component}: ${r.tensors} tensors in ${r.shards.map((s) => `${s.file} (${s.bytes} B)`).join(', ')}`);
  }
}
