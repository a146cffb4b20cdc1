// Models the benchmarks build with the project's own builder, once: a folder
// per model, rebuilt only when its `npm run build:model` arguments change
// (they are stamped beside it). Built models stay in git-ignored models/.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { buildModel, specFromArgs } from '../tools/model-builder/build.ts';
import { FolderOutput } from '../tools/model-builder/weight-store.ts';

export interface BuiltModel {
  dir: string;
  /** Seconds this call spent building; null when the folder was already built with these arguments. */
  buildSeconds: number | null;
  /** Bytes of every graph and external data file. */
  bytes: number;
}

export async function ensureBuilt(dir: string, args: readonly string[]): Promise<BuiltModel> {
  const all = [...args, '--out', dir];
  const stamp = join(dir, 'build-args.json');
  let buildSeconds: number | null = null;
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== JSON.stringify(all)) {
    const { spec, out } = specFromArgs(all);
    const t = performance.now();
    buildModel(spec, new FolderOutput(out));
    buildSeconds = (performance.now() - t) / 1000;
    writeFileSync(stamp, JSON.stringify(all));
  }
  let bytes = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile() && /model\.onnx/.test(e.name)) bytes += (await stat(join(e.parentPath, e.name))).size;
  return { dir, buildSeconds, bytes };
}
