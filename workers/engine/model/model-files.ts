// Reading a model folder's files, wherever it lives. The loader only sees
// ModelFiles; each source (URL, Hub repo, picked directory, Node path) adapts to it.
import { listFiles, modelInfo } from '@huggingface/hub';
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
  /**
   * Downloads the file into the source's cache without holding it in memory, for a later read to find;
   * resolves with its size, or null when storing failed (quota…: the read then downloads). Absent where files are local.
   */
  store?(path: string, onProgress?: ByteProgress): Promise<number | null>;
  /** Whether the file exists, without downloading it. */
  exists(path: string): Promise<boolean>;
  /** The file's size in bytes without downloading it (0 when the source cannot tell), or null when it is absent. */
  size(path: string): Promise<number | null>;
  /** Every file under the source's root ('/'-separated paths relative to it) with its size; null when the source cannot list (a plain URL). */
  list?(): Promise<{ path: string; size: number }[] | null>;
  /**
   * The file on this machine's disk (a folder in Node, or the Node download cache after storing it there), for
   * native onnxruntime to read itself: no byte of it passes through JS. Null when it is not on disk. Absent in the page.
   */
  localFile?(path: string, onProgress?: ByteProgress): Promise<LocalFile | null>;
}

/** A file on disk: its full path, the folder it is in and its name there (external data is found by name in a folder). */
export interface LocalFile {
  path: string;
  folder: string;
  name: string;
  size: number;
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
  if (!/^[\w.-]+\/[\w.-]+$/.test(spec.repo)) throw new ModelLoadError(spec.repo, 'a Hub repo id looks like "owner/name"', 'not_found');
  const host = (spec.host ?? HUB_HOST).replace(/\/+$/, '');
  const sub = spec.subfolder ? `${spec.subfolder.replace(/^\/+|\/+$/g, '')}/` : '';
  return `${host}/${spec.repo}/resolve/${encodeURIComponent(spec.revision ?? 'main')}/${sub}`;
}

/** Why a request got no answer at all, in words: Node names the socket error; a browser only says "Failed to fetch". */
export function unreachable(file: string, url: string, e: unknown): ModelLoadError {
  const code = (e as { cause?: { code?: string } })?.cause?.code;
  const why =
    code === 'ECONNREFUSED' ? 'connection refused'
    : code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'no such host'
    : code ? code
    : `${(e as Error)?.message ?? e}: the server is down, the address is wrong, or it does not allow this page (CORS)`;
  return new ModelLoadError(file, `could not reach ${new URL(url).host} (${why}) for ${url.split('?')[0]}`, 'unreachable');
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
  /** Whether the host has answered once: until then a failed request means it cannot be reached (no retries). */
  private answered = false;

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

  /** The error for a refusal (sources that know their server explain its codes). */
  protected async httpError(path: string, url: string, response: Response): Promise<ModelLoadError> {
    if (response.status === 404) return new ModelLoadError(path, `not found at ${url} (HTTP 404)`, 'not_found');
    return new ModelLoadError(path, `HTTP ${response.status} from ${url}`);
  }

  /** Whether a refusal means only that this file is not there. */
  protected isAbsent(response: Response): boolean {
    return response.status === 404 || response.status === 410;
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    return collect(this.stream(path, onProgress), (await this.size(path).catch(() => 0)) ?? 0);
  }

  /**
   * The file's bytes in order. When the connection drops, the next request
   * asks for the rest with `Range: bytes=<received>-` (a CORS-safelisted
   * header, so no preflight), again after each network error, waiting
   * retryDelayMs * 2^(n-1) before attempt n. Only the host's own answer turns
   * ranges off: a 200 with the whole file to a Range request (it ignores
   * ranges) is read past the bytes already passed on, and later attempts ask
   * for the whole file. A network error never does (a blip would otherwise
   * cost the whole file again). An answer
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
        // a host that never answered is down or misnamed: say so now rather than after retries
        if (!this.answered) throw unreachable(path, url, e);
        // a blip: the same request again (Range kept), after a longer wait each time
        if (++stalls > this.retry.maxStalls) throw new ModelLoadError(path, `network error after ${loaded} of ${total || '?'} bytes from ${url}, ${stalls} attempts in a row (${(e as Error).message})`, 'unreachable');
        await delay(this.retry.retryDelayMs * 2 ** (stalls - 1));
        continue;
      }
      this.answered = true;
      if (!response.ok) throw await this.httpError(path, url, response);
      const version = response.headers.get('etag') ?? response.headers.get('last-modified');
      if (loaded && validator && version && version !== validator) throw new ModelLoadError(path, 'the file changed on the server while it was downloading; load again to fetch the new one');
      let skip = 0;
      if (response.status === 206) {
        // a cross-origin answer may hide Content-Range; when it shows it, it must start where we stopped
        const range = /bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
        if (range && Number(range[1]) !== loaded) throw new ModelLoadError(path, `the server resumed at byte ${range[1]}, not ${loaded}`);
      } else {
        // a whole file: the first answer, or a server that ignores Range (skip what was already passed on, and stop asking)
        skip = loaded;
        if (headers.Range) ranges = false;
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
    const url = this.url(path);
    let r: Response;
    try {
      r = await this.fetchFn(url, { method: 'HEAD', ...(this.retry.httpCache ? {} : { cache: 'no-store' as const }) });
    } catch (e) {
      // no answer is not an absent file
      throw unreachable(path, url, e);
    }
    this.answered = true;
    if (!r.ok) {
      if (this.isAbsent(r)) return null;
      throw await this.httpError(path, url, r);
    }
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

  /** Every file under the picked folder, '/'-separated, with its size. */
  async list(): Promise<{ path: string; size: number }[]> {
    const out: { path: string; size: number }[] = [];
    const walk = async (dir: FileSystemDirectoryHandle, prefix: string): Promise<void> => {
      for await (const entry of (dir as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
        if (entry.kind === 'directory') await walk(entry as FileSystemDirectoryHandle, `${prefix}${entry.name}/`);
        else out.push({ path: `${prefix}${entry.name}`, size: (await (entry as FileSystemFileHandle).getFile()).size });
      }
    };
    await walk(this.root, '');
    return out.sort((a, b) => (a.path < b.path ? -1 : 1));
  }
}

/**
 * A load's credentials for the Hub: handed over with each load (a load option),
 * never part of the source spec, so never in the model id, image metadata, a
 * cache key, a message or a log.
 */
export interface HubAccess {
  /** A Hugging Face access token (`hf_…`), sent as `Authorization: Bearer` to the Hub host only. */
  token?: string;
}

/** Remembers which commit a revision last resolved to, so a cached repo loads while the Hub cannot be reached. */
export interface RefStore {
  get(key: string): Promise<string | null>;
  set(key: string, commit: string): Promise<void>;
}

type HubSpec = Extract<ModelSourceSpec, { kind: 'hub' }>;
const COMMIT_ID = /^[0-9a-f]{40}$/;

/** The model id a Hub source is recorded under: `owner/name[/subfolder][@revision]` (main left out). */
export function hubModelId(spec: Omit<HubSpec, 'kind'>): string {
  const sub = spec.subfolder?.replace(/^\/+|\/+$/g, '');
  return `${spec.repo}${sub ? `/${sub}` : ''}${spec.revision && spec.revision !== 'main' ? `@${spec.revision}` : ''}`;
}

/**
 * A Hub repo, as huggingface_hub reads one: the revision is resolved to its
 * commit first (the Hub's API), files come from `resolve/<commit>/` and are
 * cached under that commit (a moved branch fetches again, a pinned commit
 * never does), refusals are explained (gated, token, missing repo, revision
 * or file), and the repo's files are listed with their sizes. Downloads resume
 * with Range requests (UrlModelFiles).
 */
export class HubModelFiles implements ModelFiles {
  readonly id: string;
  readonly host: string;
  readonly repo: string;
  readonly revision: string;
  readonly subfolder: string;
  /** Where resolved commits are remembered (the download cache gives one). */
  refs: RefStore | null = null;
  private snapshot: Promise<UrlModelFiles> | null = null;
  private commitId: string | null = null;
  private listing: Promise<{ path: string; size: number }[] | null> | null = null;

  constructor(
    spec: Omit<HubSpec, 'kind'>,
    private readonly access: HubAccess = {},
    private readonly fetchFn: typeof fetch = (...args) => fetch(...args),
    private readonly retry: DownloadOptions = {},
  ) {
    hubBaseUrl(spec); // refuses a malformed repo id now
    this.host = (spec.host ?? HUB_HOST).replace(/\/+$/, '');
    this.repo = spec.repo;
    this.revision = spec.revision || 'main';
    this.subfolder = spec.subfolder?.replace(/^\/+|\/+$/g, '') ?? '';
    this.id = hubModelId(spec);
  }

  /** The commit the revision resolved to (null before the first request). */
  get commit(): string | null {
    return this.commitId;
  }

  private base(revision: string): string {
    return hubBaseUrl({ repo: this.repo, revision, subfolder: this.subfolder, host: this.host });
  }

  private withToken(init?: RequestInit): RequestInit | undefined {
    if (!this.access.token) return init;
    return { ...init, headers: { ...(init?.headers as Record<string, string> | undefined), Authorization: `Bearer ${this.access.token}` } };
  }

  /** A Hub refusal in words: which repo, revision or file, and what to do about it. */
  refusal(file: string, url: string, r: Response): ModelLoadError {
    const code = r.headers.get('x-error-code');
    const told = r.headers.get('x-error-message');
    const page = `${this.host}/${this.repo}`;
    const token = Boolean(this.access.token);
    if (code === 'GatedRepo') {
      return token
        ? new ModelLoadError(file, `${this.repo} is gated and your token's account has not accepted its license: accept it at ${page} while signed in as that account, then load again`, 'gated')
        : new ModelLoadError(file, `${this.repo} is gated: it needs a Hugging Face token. Accept its license at ${page}, then give a read token (${HUB_HOST}/settings/tokens)`, 'gated');
    }
    if (code === 'RepoNotFound') return new ModelLoadError(file, `no repo ${this.repo} at ${this.host} (check the id${token ? '' : '; a private repo needs a token that can read it'})`, 'not_found');
    if (code === 'RevisionNotFound') return new ModelLoadError(file, `no revision "${this.revision}" in ${this.repo} (a branch, tag or commit id)`, 'not_found');
    if (r.status === 401) {
      return token
        ? new ModelLoadError(file, `the Hub refused the token for ${this.repo}${told ? ` (${told})` : ''}: give a valid read token`, 'unauthorized')
        : new ModelLoadError(file, `${this.repo} needs a Hugging Face token (HTTP 401 from ${url})`, 'unauthorized');
    }
    if (r.status === 403) return new ModelLoadError(file, `the token may not read ${this.repo}${told ? ` (${told})` : ''}: a fine-grained token needs read access to it (HTTP 403)`, 'unauthorized');
    if (r.status === 404) return new ModelLoadError(file, `no file ${this.subfolder ? `${this.subfolder}/` : ''}${file} in ${this.repo} at revision ${this.revision} (${url})`, 'not_found');
    return new ModelLoadError(file, `HTTP ${r.status} from ${url}`);
  }

  /** fetch for the Hub's API: a refusal becomes our error; a host without the API answers a plain 404, passed on. */
  private apiFetch(what: string): typeof fetch {
    return async (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      let r: Response;
      try {
        r = await this.fetchFn(input, { ...init, cache: 'no-store' });
      } catch (e) {
        throw unreachable(what, url, e);
      }
      if (r.ok || (r.status === 404 && !r.headers.get('x-error-code'))) return r;
      throw this.refusal(what, url, r);
    };
  }

  private async resolveCommit(): Promise<string> {
    if (COMMIT_ID.test(this.revision)) return this.revision;
    const refKey = `${this.host}/api/models/${this.repo}/revision/${encodeURIComponent(this.revision)}`;
    try {
      const info = await modelInfo({ name: this.repo, revision: this.revision, hubUrl: this.host, accessToken: this.access.token, additionalFields: ['sha'], fetch: this.apiFetch(this.id) });
      if (!info.sha) return this.revision;
      if ((await this.refs?.get(refKey).catch(() => null)) !== info.sha) await this.refs?.set(refKey, info.sha).catch(() => undefined);
      return info.sha;
    } catch (e) {
      if (e instanceof ModelLoadError) {
        // offline: the commit this revision last resolved to, if its files were cached
        const known = e.failure === 'unreachable' ? await this.refs?.get(refKey).catch(() => null) : null;
        if (known) return known;
        throw e;
      }
      // @huggingface/hub checks a token's form before sending it
      if (e instanceof TypeError && this.access.token) throw new ModelLoadError(this.id, `${e.message}: give a Hugging Face access token (hf_…)`, 'unauthorized');
      // a host that serves the resolve scheme without the Hub's API (a static mirror): files by revision name
      if ((e as { statusCode?: number }).statusCode === 404) return this.revision;
      throw new ModelLoadError(this.id, `the Hub's API failed: ${(e as Error).message}`);
    }
  }

  private files(): Promise<UrlModelFiles> {
    this.snapshot ??= this.resolveCommit().then((commit) => {
      this.commitId = commit;
      return new HubResolveFiles(this.base(commit), this.id, (input, init) => this.fetchFn(input, this.withToken(init)), this.retry, this);
    });
    // a failed resolution is tried again by the next call
    this.snapshot.catch(() => (this.snapshot = null));
    return this.snapshot;
  }

  /** Resolves the revision before the first cache key is asked for; the cache remembers commits for offline loads. */
  async prepare(refs?: RefStore): Promise<void> {
    if (refs) this.refs = refs;
    await this.files();
  }

  /** The file's identity in the download cache: its URL at the resolved commit. */
  cacheKey(path: string): string {
    if (!this.commitId) throw new Error(`${this.id}: cacheKey(${path}) before the revision was resolved (call prepare())`);
    return new URL(path, this.base(this.commitId)).href;
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    return (await this.files()).read(path, onProgress);
  }

  async *stream(path: string, onProgress?: ByteProgress): AsyncIterable<Uint8Array> {
    yield* (await this.files()).stream(path, onProgress);
  }

  async size(path: string): Promise<number | null> {
    return (await this.files()).size(path);
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }

  /** The repo's files under the subfolder, with sizes (LFS files: the real size), from the Hub's tree API. */
  list(): Promise<{ path: string; size: number }[] | null> {
    this.listing ??= (async () => {
      await this.files();
      const commit = this.commitId!;
      const prefix = this.subfolder ? `${this.subfolder}/` : '';
      const out: { path: string; size: number }[] = [];
      try {
        const entries = listFiles({ repo: { type: 'model', name: this.repo }, revision: commit, path: this.subfolder || undefined, recursive: true, hubUrl: this.host, accessToken: this.access.token, fetch: this.apiFetch(this.id) });
        for await (const e of entries) if (e.type === 'file' && e.path.startsWith(prefix)) out.push({ path: e.path.slice(prefix.length), size: e.lfs?.size ?? e.size });
      } catch (e) {
        if (e instanceof ModelLoadError) throw e;
        return null; // no tree API on this host
      }
      return out.sort((a, b) => (a.path < b.path ? -1 : 1));
    })();
    this.listing.catch(() => (this.listing = null));
    return this.listing;
  }
}

/** Files at one commit of a Hub repo: UrlModelFiles whose refusals the repo explains. */
class HubResolveFiles extends UrlModelFiles {
  constructor(base: string, id: string, fetchFn: typeof fetch, retry: DownloadOptions, private readonly hub: HubModelFiles) {
    super(base, id, fetchFn, retry);
  }

  protected override async httpError(path: string, url: string, response: Response): Promise<ModelLoadError> {
    return this.hub.refusal(path, url, response);
  }

  protected override isAbsent(response: Response): boolean {
    const code = response.headers.get('x-error-code');
    return response.status === 404 && code !== 'RepoNotFound' && code !== 'RevisionNotFound';
  }
}

/** ModelFiles for a source spec (`access`: the load's Hub token); `path` sources are opened by the Node entry points. */
export function openModelFiles(spec: ModelSourceSpec, access: HubAccess = {}): ModelFiles {
  switch (spec.kind) {
    case 'url':
      return new UrlModelFiles(spec.url);
    case 'hub':
      return new HubModelFiles(spec, access);
    case 'directory':
      return new DirectoryModelFiles(spec.handle, spec.name);
    case 'path':
      throw new ModelLoadError(spec.path, 'local paths load only in Node: pass nodeFolderFiles(path) from workers/engine/model/node-folder-files.ts');
  }
}
