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
  /** The file's bytes as they arrive, never the whole file at once (downloads resume where a dropped connection stopped). */
  stream?(path: string, onProgress?: ByteProgress): AsyncIterable<Uint8Array>;
  /** The file as a Blob that reads from storage as it is consumed (a picked folder, the browser's download cache): no copy in memory. */
  blob?(path: string, onProgress?: ByteProgress): Promise<Blob>;
  /** Whether the file exists, without downloading it. */
  exists(path: string): Promise<boolean>;
  /** The file's size in bytes without downloading it (0 when the source cannot tell), or null when it is absent. */
  size(path: string): Promise<number | null>;
}

/** All of a stream in one buffer: no second copy when the size is known. */
export async function collect(chunks: AsyncIterable<Uint8Array>, sizeHint = 0): Promise<Uint8Array> {
  let buffer = new Uint8Array(sizeHint || 1 << 16);
  let loaded = 0;
  for await (const value of chunks) {
    if (loaded + value.byteLength > buffer.byteLength) {
      const grown = new Uint8Array(Math.max(buffer.byteLength * 2, loaded + value.byteLength));
      grown.set(buffer.subarray(0, loaded));
      buffer = grown;
    }
    buffer.set(value, loaded);
    loaded += value.byteLength;
  }
  return loaded === buffer.byteLength ? buffer : buffer.slice(0, loaded);
}

export const HUB_HOST = 'https://huggingface.co';

/** A Hub repo's files through the Hub's resolve scheme: `<host>/<repo>/resolve/<revision>/<subfolder>/<path>`. */
export function hubBaseUrl(spec: { repo: string; revision?: string; subfolder?: string; host?: string }): string {
  if (!/^[\w.-]+\/[\w.-]+$/.test(spec.repo)) throw new ModelLoadError(spec.repo, 'a Hub repo id looks like "owner/name"');
  const host = (spec.host ?? HUB_HOST).replace(/\/+$/, '');
  const sub = spec.subfolder ? `${spec.subfolder.replace(/^\/+|\/+$/g, '')}/` : '';
  return `${host}/${spec.repo}/resolve/${encodeURIComponent(spec.revision ?? 'main')}/${sub}`;
}

export interface DownloadOptions {
  /** Attempts in a row that bring no new byte before the download fails. */
  maxStalls?: number;
  /** Wait before attempt n: retryDelayMs * 2^(n-1). */
  retryDelayMs?: number;
  /** Let the browser's HTTP cache keep the files (the app's own small files). Off by default: the
   * download cache keeps model files, and a second copy of gigabytes in the HTTP cache helps nobody. */
  httpCache?: boolean;
}

/** Files under a base URL, fetched as streams that resume after a dropped connection. */
export class UrlModelFiles implements ModelFiles {
  readonly base: string;
  private readonly retry: Required<DownloadOptions>;

  constructor(
    base: string,
    readonly id: string = base,
    private readonly fetchFn: typeof fetch = (...args) => fetch(...args),
    retry: DownloadOptions = {},
  ) {
    this.base = base.endsWith('/') ? base : `${base}/`;
    this.retry = { maxStalls: retry.maxStalls ?? 4, retryDelayMs: retry.retryDelayMs ?? 250, httpCache: retry.httpCache ?? false };
  }

  private url(path: string): string {
    return new URL(path, this.base).href;
  }

  /** A file's URL is its identity in the download cache. */
  cacheKey(path: string): string {
    return this.url(path);
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    return collect(this.stream(path, onProgress), (await this.size(path).catch(() => 0)) ?? 0);
  }

  /**
   * The file's bytes in order. When the connection drops, the next request
   * asks for the rest with `Range: bytes=<received>-` (a CORS-safelisted
   * header, so no preflight); a server that answers with the whole file again,
   * or refuses the range, is read past the bytes already passed on. An answer
   * whose ETag or Last-Modified differs from the first one's means the file
   * changed on the server: an error, not a splice. Progress never goes back.
   * A file that keeps failing without new bytes is an error naming it.
   */
  async *stream(path: string, onProgress?: ByteProgress): AsyncIterable<Uint8Array> {
    const url = this.url(path);
    let loaded = 0;
    let total = 0;
    let validator: string | null = null;
    let stalls = 0;
    let ranges = true;
    for (;;) {
      const headers: Record<string, string> = loaded && ranges ? { Range: `bytes=${loaded}-` } : {};
      let response: Response;
      try {
        response = await this.fetchFn(url, { headers, ...(this.retry.httpCache ? {} : { cache: 'no-store' as const }) });
      } catch (e) {
        // a host that rejects ranges outright (a failed CORS check): ask for the whole file and skip ahead
        if (headers.Range) ranges = false;
        else if (++stalls > this.retry.maxStalls) throw new ModelLoadError(path, `network error after ${loaded} of ${total || '?'} bytes (${(e as Error).message})`);
        await delay(this.retry.retryDelayMs * 2 ** Math.max(0, stalls - 1));
        continue;
      }
      if (!response.ok) throw new ModelLoadError(path, `HTTP ${response.status} from ${url}`);
      const version = response.headers.get('etag') ?? response.headers.get('last-modified');
      if (loaded && validator && version && version !== validator) throw new ModelLoadError(path, 'the file changed on the server while it was downloading; load again to fetch the new one');
      let skip = 0;
      if (response.status === 206) {
        // a cross-origin answer may hide Content-Range; when it shows it, it must start where we stopped
        const range = /bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
        if (range && Number(range[1]) !== loaded) throw new ModelLoadError(path, `the server resumed at byte ${range[1]}, not ${loaded}`);
      } else {
        // a whole file: the first answer, or a server that ignores Range (skip what was already passed on)
        skip = loaded;
        // a compressed response's length is not the body's: then the size is unknown
        const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
        if (!encoded) total = Number(response.headers.get('content-length') ?? 0);
      }
      validator ??= version;
      if (!response.body) {
        const all = new Uint8Array(await response.arrayBuffer()).subarray(skip);
        loaded += all.byteLength;
        onProgress?.(loaded, Math.max(total, loaded));
        yield all;
        return;
      }
      const reader = response.body.getReader();
      const before = loaded;
      let failure: unknown = null;
      try {
        for (;;) {
          let part: ReadableStreamReadResult<Uint8Array>;
          try {
            part = await reader.read();
          } catch (e) {
            failure = e; // the connection broke: retried below
            break;
          }
          if (part.done) break;
          let chunk = part.value;
          if (skip) {
            const drop = Math.min(skip, chunk.byteLength);
            skip -= drop;
            chunk = chunk.subarray(drop);
            if (!chunk.byteLength) continue;
          }
          loaded += chunk.byteLength;
          onProgress?.(loaded, Math.max(total, loaded)); // may throw: an aborted load stops here
          yield chunk;
        }
      } finally {
        // leaving early (an aborted load, a consumer that stopped): the request ends too
        void reader.cancel().catch(() => undefined);
      }
      if (failure) {
        if (total && loaded >= total) return; // every byte arrived; only the connection's end failed
        stalls = loaded > before ? 1 : stalls + 1;
        if (stalls > this.retry.maxStalls) throw new ModelLoadError(path, `download interrupted after ${loaded} of ${total || '?'} bytes and ${stalls} attempts without progress (${(failure as Error).message})`);
        await delay(this.retry.retryDelayMs * 2 ** (stalls - 1));
        continue;
      }
      if (total && loaded < total) {
        // the body ended early without an error: resume like a dropped connection
        stalls = loaded > before ? 1 : stalls + 1;
        if (stalls > this.retry.maxStalls) throw new ModelLoadError(path, `truncated download: ${loaded} of ${total} bytes`);
        await delay(this.retry.retryDelayMs * 2 ** (stalls - 1));
        continue;
      }
      return;
    }
  }

  async size(path: string): Promise<number | null> {
    let r: Response;
    try {
      r = await this.fetchFn(this.url(path), { method: 'HEAD', ...(this.retry.httpCache ? {} : { cache: 'no-store' as const }) });
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

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    const f = await this.blob(path, onProgress);
    return new Uint8Array(await f.arrayBuffer());
  }

  /** The picked file itself: a Blob the browser reads from disk as it is consumed. */
  async blob(path: string, onProgress?: ByteProgress): Promise<Blob> {
    try {
      const f = await this.file(path);
      onProgress?.(f.size, f.size);
      return f;
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
