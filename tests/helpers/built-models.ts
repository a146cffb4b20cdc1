// Models the tests build on demand with the project's own builder, into a
// temporary folder: variants of the tiny model (fp16 I/O, fp16 weights, fused
// attention, sharded data) and reduced-depth real-width ones.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildModel, TINY_MODEL_ID, type BuildSpec } from '../../tools/model-builder/build.ts';
import { PRESETS } from '../../tools/model-builder/presets.ts';
import { FolderOutput } from '../../tools/model-builder/weight-store.ts';

export const tinySpec = (over: Partial<BuildSpec> = {}): BuildSpec => ({
  preset: PRESETS.tiny,
  id: TINY_MODEL_ID,
  weights: 'float32',
  io: 'float32',
  attention: 'decomposed',
  dataFile: () => null,
  ...over,
});

export interface BuiltModel {
  dir: string;
  remove(): Promise<void>;
}

/** Builds a model into a fresh temporary folder. */
export async function buildTemp(spec: BuildSpec): Promise<BuiltModel> {
  const root = await mkdtemp(join(tmpdir(), 'sd3-built-'));
  const dir = join(root, 'model');
  buildModel(spec, new FolderOutput(dir));
  return { dir, remove: () => rm(root, { recursive: true, force: true }) };
}
