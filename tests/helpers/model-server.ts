// A real HTTP server for model files, as tests need them: a folder served as is,
// or in the Hub's `/<repo>/resolve/<revision>/<path>` layout, with byte ranges
// (`Range: bytes=N-`, as the Hub's storage answers them) unless told not to.
// It logs every request so tests can prove what was (and was not) fetched.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';

export interface ServedRepo {
  repo: string;
  revision?: string;
  /** Folder on disk holding the repo's root. */
  folder: string;
}

/** A status code instead of the file; the connection dropped when a response reaches byte `truncateAt` of the file (the first `times` responses, default all); other bytes in its place; or the file after a delay (a slow link). */
export type Fault = number | { truncateAt: number; times?: number } | { body: Uint8Array } | { delayMs: number };

export interface ModelServer {
  url: string;
  requests: { method: string; path: string; range?: string; status?: number }[];
  /** Fault injection per URL path. */
  faults: Map<string, Fault>;
  /** Answer Range requests with 206 (true) or ignore them and send the whole file (false). */
  ranges: boolean;
  close(): Promise<void>;
}

export async function startModelServer(opts: { root?: string; repos?: ServedRepo[] }): Promise<ModelServer> {
  const requests: ModelServer['requests'] = [];
  const faults = new Map<string, Fault>();
  const resolvePath = (urlPath: string): string | null => {
    for (const r of opts.repos ?? []) {
      const prefix = `/${r.repo}/resolve/${r.revision ?? 'main'}/`;
      if (urlPath.startsWith(prefix)) return join(r.folder, normalize(urlPath.slice(prefix.length)));
    }
    return opts.root ? join(opts.root, normalize(urlPath)) : null;
  };
  const state = { ranges: true };
  const server: Server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const entry: ModelServer['requests'][number] = { method: req.method ?? 'GET', path, ...(req.headers.range ? { range: req.headers.range } : {}) };
    requests.push(entry);
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, Last-Modified, Accept-Ranges');
    const fault = faults.get(path);
    if (fault && typeof fault === 'object' && 'delayMs' in fault && req.method === 'GET') await new Promise((r) => setTimeout(r, fault.delayMs));
    if (typeof fault === 'number') {
      res.writeHead(fault).end('injected fault');
      return;
    }
    if (fault && 'body' in fault) {
      res.writeHead(200, { 'Content-Length': fault.body.byteLength, 'Content-Type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : fault.body);
      return;
    }
    const file = path.includes('..') ? null : resolvePath(path);
    const info = file ? await stat(file).catch(() => null) : null;
    if (!file || !info?.isFile()) {
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
      createReadStream(file, { start, end: fault.truncateAt - 1 })
        .on('end', () => setTimeout(() => res.destroy(), 100))
        .pipe(res, { end: false });
    } else createReadStream(file, { start }).pipe(res);
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
