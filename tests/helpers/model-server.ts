// A real HTTP server for model files, as tests need them: a folder served as is,
// or in the Hub's `/<repo>/resolve/<revision>/<path>` layout, with byte ranges
// (`Range: bytes=N-`, as the Hub's storage answers them) unless told not to.
// Hub repos answer as huggingface.co does (huggingface_hub's hf_raise_for_status
// reads the same headers): `X-Repo-Commit` on files, `resolve/<commit>/` as well as
// `resolve/<branch>/`, the revision API (`/api/models/<repo>/revision/<rev>` ->
// `sha`) and the tree API (sizes, LFS sha256); a gated repo answers 401 without a
// token and 403 with a token whose account has not accepted its license, both
// with `X-Error-Code: GatedRepo` (its API stays public, as the Hub's does); an
// unknown repo 401 (404 with a token) `RepoNotFound`, an unknown revision 404
// `RevisionNotFound`, a missing file 404 `EntryNotFound`.
// It logs every request so tests can prove what was (and was not) fetched.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize, relative } from 'node:path';

export interface ServedRepo {
  repo: string;
  /** The branch it is served under (default main). */
  revision?: string;
  /** Folder on disk holding the repo's root. */
  folder: string;
  /** The commit the branch points at (default: a hash of the repo's name); change it to move the branch. */
  commit?: string;
  /** Gated: only this token may download files. */
  gatedToken?: string;
}

/** The commit a served repo's branch points at. */
export const servedCommit = (r: ServedRepo): string => r.commit ?? createHash('sha1').update(`${r.repo}@${r.revision ?? 'main'}`).digest('hex');

/**
 * A status code instead of the file; the connection dropped when a response reaches byte `truncateAt` of the file (the first `times` responses, default all); other bytes in its place; or the file after a delay (a slow link);
 * the connection reset before any answer (a network blip: the client sees a network error, no status); the file sent `bytes` at a time every `everyMs` (a trickle: many small chunks);
 * or one fault per GET in turn (`sequence`, each used once; HEAD requests and GETs after the last are served normally);
 * or the file once `until` settles (a download held open until the test lets it go).
 */
export type Fault = number | { truncateAt: number; times?: number } | { body: Uint8Array } | { delayMs: number } | { until: Promise<unknown> } | { reset: true } | { trickle: { bytes: number; everyMs: number } } | { sequence: Fault[] };

export interface ModelServer {
  url: string;
  /** Every request; `authorization` says whether one was sent (never its value). */
  requests: { method: string; path: string; range?: string; status?: number; authorization?: boolean; at?: number; bytes?: number }[];
  /** Fault injection per URL path. */
  faults: Map<string, Fault>;
  /** Answer Range requests with 206 (true) or ignore them and send the whole file (false). */
  ranges: boolean;
  close(): Promise<void>;
}

export async function startModelServer(opts: { root?: string; repos?: ServedRepo[] }): Promise<ModelServer> {
  const requests: ModelServer['requests'] = [];
  const faults = new Map<string, Fault>();
  const repos = opts.repos ?? [];
  const state = { ranges: true };
  const server: Server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const entry: ModelServer['requests'][number] = { method: req.method ?? 'GET', path, at: performance.now(), ...(req.headers.range ? { range: req.headers.range } : {}), ...(req.headers.authorization ? { authorization: true } : {}) };
    requests.push(entry);
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, Last-Modified, Accept-Ranges, ETag, X-Repo-Commit, X-Error-Code, X-Error-Message, Link');
    if (req.method === 'OPTIONS') {
      // a CORS preflight: a request with a token (Authorization) is not a simple one
      res.writeHead(204, { 'Access-Control-Allow-Headers': 'Authorization, Range, Content-Type', 'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS', 'Access-Control-Max-Age': '600' }).end();
      return;
    }
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const refuse = (status: number, code: string, message: string) => {
      entry.status = status;
      res.writeHead(status, { 'Content-Type': 'application/json', 'X-Error-Code': code, 'X-Error-Message': message }).end(req.method === 'HEAD' ? undefined : JSON.stringify({ error: message }));
    };
    const json = (body: unknown) => {
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    };
    // the Hub's API: revision -> commit, and the file tree with sizes
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)(?:\/(.*))?$/.exec(path);
    const hubRepo = api ? repos.find((r) => r.repo === api[1]) : repos.find((r) => path.startsWith(`/${r.repo}/resolve/`));
    if (api || (!hubRepo && /^\/[^/]+\/[^/]+\/resolve\//.test(path) && !opts.root)) {
      if (!hubRepo) return token ? refuse(404, 'RepoNotFound', 'Repository not found') : refuse(401, 'RepoNotFound', 'Repository not found');
    }
    let file: string | null = null;
    let commit = '';
    let resolvedPath = path;
    if (hubRepo) {
      commit = servedCommit(hubRepo);
      const branch = hubRepo.revision ?? 'main';
      const [kind, rev, rest] = api ? [api[2], api[3], api[4] ?? ''] : (() => {
        const [r, ...p] = path.slice(`/${hubRepo.repo}/resolve/`.length).split('/');
        return ['resolve', r, p.join('/')];
      })();
      if (rev !== branch && rev !== commit) return refuse(404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
      if (kind === 'revision') return json({ _id: commit.slice(0, 24), id: hubRepo.repo, sha: commit, private: false, gated: hubRepo.gatedToken ? 'manual' : false, downloads: 0, likes: 0, lastModified: new Date(0).toISOString() });
      if (kind === 'tree') return json(await tree(hubRepo.folder, rest, req.url?.includes('recursive=true') ?? false));
      if (hubRepo.gatedToken !== undefined && token !== hubRepo.gatedToken) {
        return token
          ? refuse(403, 'GatedRepo', `Access to model ${hubRepo.repo} is restricted and you are not in the authorized list. Visit https://huggingface.co/${hubRepo.repo} to ask for access.`)
          : refuse(401, 'GatedRepo', `Access to model ${hubRepo.repo} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      }
      res.setHeader('X-Repo-Commit', commit);
      file = rest.includes('..') ? null : join(hubRepo.folder, normalize(rest));
      // faults are set by branch name; a file fetched at its commit meets them too
      resolvedPath = `/${hubRepo.repo}/resolve/${branch}/${rest}`;
    } else if (opts.root && !path.includes('..')) file = join(opts.root, normalize(path));
    let fault = faults.get(path) ?? faults.get(resolvedPath);
    // a sequence: this GET meets the next fault in it (HEADs pass)
    if (fault && typeof fault === 'object' && 'sequence' in fault) fault = req.method === 'GET' ? fault.sequence.shift() : undefined;
    if (fault && typeof fault === 'object' && 'reset' in fault) {
      // no status line at all: the client's fetch rejects as on a dropped network
      req.socket.destroy();
      return;
    }
    if (fault && typeof fault === 'object' && 'delayMs' in fault && req.method === 'GET') await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault && typeof fault === 'object' && 'until' in fault && req.method === 'GET') await fault.until.catch(() => undefined);
    if (typeof fault === 'number') {
      res.writeHead(fault).end('injected fault');
      return;
    }
    if (fault && 'body' in fault) {
      res.writeHead(200, { 'Content-Length': fault.body.byteLength, 'Content-Type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : fault.body);
      return;
    }
    const info = file ? await stat(file).catch(() => null) : null;
    if (!file || !info?.isFile()) {
      if (hubRepo) return refuse(404, 'EntryNotFound', `${path} does not exist on "${hubRepo.revision ?? 'main'}"`);
      res.writeHead(404).end('not found');
      return;
    }
    const range = state.ranges ? /^bytes=(\d+)-$/.exec(req.headers.range ?? '') : null;
    const start = range ? Number(range[1]) : 0;
    if (range && start >= info.size) {
      res.writeHead(416, { 'Content-Range': `bytes */${info.size}` }).end();
      return;
    }
    entry.status = range ? 206 : 200;
    // bytes of the file this answer sent (what a resume costs)
    const count = (stream: NodeJS.ReadableStream) => stream.on('data', (c: Buffer) => (entry.bytes = (entry.bytes ?? 0) + c.byteLength));
    res.writeHead(entry.status, {
      'Content-Length': info.size - start,
      'Content-Type': 'application/octet-stream',
      'Last-Modified': info.mtime.toUTCString(),
      ...(state.ranges ? { 'Accept-Ranges': 'bytes' } : {}),
      ...(range ? { 'Content-Range': `bytes ${start}-${info.size - 1}/${info.size}` } : {}),
    });
    if (req.method === 'HEAD') res.end();
    else if (fault && 'truncateAt' in fault && fault.truncateAt > start && (fault.times ?? Infinity) > 0) {
      if (fault.times !== undefined) fault.times--;
      // promise the rest of the file, send part of it, then drop the connection (a moment later, as a
      // real one does: the bytes sent reach the client before the reset does)
      count(createReadStream(file, { start, end: fault.truncateAt - 1 }))
        .on('end', () => setTimeout(() => res.destroy(), 100))
        .pipe(res, { end: false });
    } else if (fault && 'trickle' in fault) {
      const { bytes, everyMs } = fault.trickle;
      const whole = await readFile(file);
      let at = start;
      const next = () => {
        if (res.destroyed) return;
        const part = whole.subarray(at, Math.min(at + bytes, whole.byteLength));
        at += part.byteLength;
        entry.bytes = (entry.bytes ?? 0) + part.byteLength;
        if (at >= whole.byteLength) res.end(part);
        else res.write(part, () => setTimeout(next, everyMs));
      };
      next();
    } else count(createReadStream(file, { start })).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    faults,
    get ranges() {
      return state.ranges;
    },
    set ranges(v: boolean) {
      state.ranges = v;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** The Hub's tree API: entries under `sub`, with sizes; weights are LFS files with their sha256. */
async function tree(folder: string, sub: string, recursive: boolean): Promise<unknown[]> {
  const base = join(folder, normalize(sub || '.'));
  const out: unknown[] = [];
  for (const e of await readdir(base, { withFileTypes: true, recursive }).catch(() => [])) {
    const full = join(e.parentPath, e.name);
    const path = relative(folder, full).split('\\').join('/');
    if (e.isDirectory()) {
      out.push({ type: 'directory', oid: createHash('sha1').update(path).digest('hex'), size: 0, path });
      continue;
    }
    const bytes = await readFile(full);
    const oid = createHash('sha1').update(bytes).digest('hex');
    const lfs = /\.onnx(_data|\.data)?(\.\d+)?$/.test(path) ? { lfs: { oid: createHash('sha256').update(bytes).digest('hex'), size: bytes.byteLength, pointerSize: 134 } } : {};
    out.push({ type: 'file', oid, size: bytes.byteLength, path, ...lfs });
  }
  return out;
}
