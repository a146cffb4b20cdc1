// Reading a model folder's files, wherever it lives. The loader only sees
// ModelFiles; each source (URL, Hub repo, picked directory, Node path) adapts to it.
import type { ModelSourceSpec } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';

export type ByteProgress = (loaded: number, total: number) => void;

export interface ModelFiles {
  /** Model id recorded in image metadata (repo id, URL or folder name). */
  readonly id: string;
  /** Reads one file (path relative to the model root). Throws ModelLoadError naming it. */
  read(path: string, onProgress?: ByteProgress): Promise<Uint8Array>;
  /** Whether the file exists, without downloading it. */
  exists(path: string): Promise<boolean>;
  /** The file's size in bytes without downloading it (0 when the source cannot tell), or null when it is absent. */
  size(path: string): Promise<number | null>;
}

export const HUB_HOST = 'https://huggingface.co';

/** A Hub repo's files through the Hub's resolve scheme: `<host>/<repo>/resolve/<revision>/<subfolder>/<path>`. */
export function hubBaseUrl(spec: { repo: string; revision?: string; subfolder?: string; host?: string }): string {
  if (!/^[\w.-]+\/[\w.-]+$/.test(spec.repo)) throw new ModelLoadError(spec.repo, 'a Hub repo id looks like "owner/name"');
  const host = (spec.host ?? HUB_HOST).replace(/\/+$/, '');
  const sub = spec.subfolder ? `${spec.subfolder.replace(/^\/+|\/+$/g, '')}/` : '';
  return `${host}/${spec.repo}/resolve/${encodeURIComponent(spec.revision ?? 'main')}/${sub}`;
}

/** Files under a base URL, fetched with streaming progress. */
export class UrlModelFiles implements ModelFiles {
  readonly base: string;

  constructor(
    base: string,
    readonly id: string = base,
    private readonly fetchFn: typeof fetch = (...args) => fetch(...args),
  ) {
    this.base = base.endsWith('/') ? base : `${base}/`;
  }

  private url(path: string): string {
    return new URL(path, this.base).href;
  }

  /** A file's URL is its identity in the download cache. */
  cacheKey(path: string): string {
    return this.url(path);
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    let response: Response;
    try {
      response = await this.fetchFn(this.url(path));
    } catch (e) {
      throw new ModelLoadError(path, `network error (${(e as Error).message})`);
    }
    if (!response.ok) throw new ModelLoadError(path, `HTTP ${response.status} from ${this.url(path)}`);
    // a compressed response's length is not the body's: then the size is unknown
    const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
    const total = encoded ? 0 : Number(response.headers.get('content-length') ?? 0);
    if (!response.body) return new Uint8Array(await response.arrayBuffer());
    // stream into one buffer: no second copy when the size is known
    const reader = response.body.getReader();
    let buffer = new Uint8Array(total || 1 << 16);
    let loaded = 0;
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new ModelLoadError(path, `download interrupted after ${loaded} of ${total || '?'} bytes (${(e as Error).message}); loading again restarts it`);
      }
      const { done, value } = chunk;
      if (done) break;
      if (loaded + value.byteLength > buffer.byteLength) {
        const grown = new Uint8Array(Math.max(buffer.byteLength * 2, loaded + value.byteLength));
        grown.set(buffer.subarray(0, loaded));
        buffer = grown;
      }
      buffer.set(value, loaded);
      loaded += value.byteLength;
      onProgress?.(loaded, Math.max(total, loaded));
    }
    if (total && loaded !== total) throw new ModelLoadError(path, `truncated download: ${loaded} of ${total} bytes`);
    return loaded === buffer.byteLength ? buffer : buffer.slice(0, loaded);
  }

  async size(path: string): Promise<number | null> {
    let r: Response;
    try {
      r = await this.fetchFn(this.url(path), { method: 'HEAD' });
    } catch {
      return null;
    }
    if (!r.ok) return null;
    // the Hub answers an LFS file's HEAD with a redirect; fetch follows it to the real length
    return Number(r.headers.get('x-linked-size') ?? r.headers.get('content-length') ?? 0) || 0;
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }
}

/** A folder the user picked with the directory picker. */
export class DirectoryModelFiles implements ModelFiles {
  constructor(
    private readonly root: FileSystemDirectoryHandle,
    readonly id: string = root.name,
  ) {}

  private async file(path: string): Promise<File> {
    const parts = path.split('/').filter(Boolean);
    let dir = this.root;
    for (const part of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(part);
    return (await dir.getFileHandle(parts[parts.length - 1])).getFile();
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    try {
      const f = await this.file(path);
      const bytes = new Uint8Array(await f.arrayBuffer());
      onProgress?.(bytes.byteLength, bytes.byteLength);
      return bytes;
    } catch (e) {
      throw new ModelLoadError(path, `not readable in the chosen folder (${(e as Error).message})`);
    }
  }

  async size(path: string): Promise<number | null> {
    return this.file(path).then(
      (f) => f.size,
      () => null,
    );
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }
}

/** ModelFiles for a source spec; `path` sources are opened by the Node entry points. */
export function openModelFiles(spec: ModelSourceSpec): ModelFiles {
  switch (spec.kind) {
    case 'url':
      return new UrlModelFiles(spec.url);
    case 'hub':
      return new UrlModelFiles(hubBaseUrl(spec), spec.subfolder ? `${spec.repo}/${spec.subfolder}` : spec.repo);
    case 'directory':
      return new DirectoryModelFiles(spec.handle, spec.name);
    case 'path':
      throw new ModelLoadError(spec.path, 'local paths load only in Node: pass nodeFolderFiles(path) from workers/engine/model/node-folder-files.ts');
  }
}
