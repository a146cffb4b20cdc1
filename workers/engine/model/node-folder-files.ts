// ModelFiles over a folder on disk, for Node (CLI, benchmarks, tests). Kept out
// of the browser bundle: only Node entry points import it.
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ModelLoadError } from '../errors.ts';
import type { ByteProgress, ModelFiles } from './model-files.ts';

export function nodeFolderFiles(folder: string, id?: string): ModelFiles {
  const root = resolve(folder);
  // a path under the folder, or refused: names inside a model (external data, configs) come from whoever made it
  const inside = (path: string) => {
    const full = resolve(root, path);
    const rel = relative(root, full);
    if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) throw new ModelLoadError(path, `it is outside the model folder ${root}; refused`);
    return full;
  };
  return {
    id: id ?? basename(root),
    async read(path: string, onProgress?: ByteProgress) {
      try {
        const buf = await readFile(inside(path));
        const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
        onProgress?.(bytes.byteLength, bytes.byteLength);
        return bytes;
      } catch (e) {
        if (e instanceof ModelLoadError) throw e;
        throw new ModelLoadError(path, `cannot read ${join(root, path)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    },
    async size(path: string) {
      return stat(inside(path)).then(
        (s) => (s.isFile() ? s.size : null),
        () => null,
      );
    },
    async exists(path: string) {
      return (await this.size(path)) !== null;
    },
    /** The file where it lies: native onnxruntime reads it (and its external data beside it) itself. */
    async localFile(path: string, onProgress?: ByteProgress) {
      const full = inside(path);
      // the size on disk, which is what onnxruntime reads
      const size = await stat(full).then(
        (s) => (s.isFile() ? s.size : null),
        () => null,
      );
      if (size === null) return null;
      onProgress?.(size, size);
      return { path: full, folder: dirname(full), name: basename(full), size };
    },
    /** Every file under the folder, '/'-separated, with its size. */
    async list() {
      const out: { path: string; size: number }[] = [];
      for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
        if (!e.isFile()) continue;
        const full = join(e.parentPath, e.name);
        out.push({ path: relative(root, full).split(sep).join('/'), size: (await stat(full)).size });
      }
      return out.sort((a, b) => (a.path < b.path ? -1 : 1));
    },
  };
}
