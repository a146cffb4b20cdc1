// A real HTTP server for model files, as tests need them: a folder served as is,
// or in the Hub's `/<repo>/resolve/<revision>/<path>` layout. It logs every
// request so tests can prove what was (and was not) fetched.
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

export type Fault = number | { truncateAt: number } | { body: Uint8Array };

export interface ModelServer {
  url: string;
  requests: { method: string; path: string }[];
  /** Fault injection per URL path: a status code instead of the file, a body cut
   * short after N bytes (the connection drops), or other bytes in its place. */
  faults: Map<string, Fault>;
  close(): Promise<void>;
}

export async function startModelServer(opts: { root?: string; repos?: ServedRepo[] }): Promise<ModelServer> {
  const requests: { method: string; path: string }[] = [];
  const faults = new Map<string, Fault>();
  const resolvePath = (urlPath: string): string | null => {
    for (const r of opts.repos ?? []) {
      const prefix = `/${r.repo}/resolve/${r.revision ?? 'main'}/`;
      if (urlPath.startsWith(prefix)) return join(r.folder, normalize(urlPath.slice(prefix.length)));
    }
    return opts.root ? join(opts.root, normalize(urlPath)) : null;
  };
  const server: Server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push({ method: req.method ?? 'GET', path });
    res.setHeader('Access-Control-Allow-Origin', '*');
    const fault = faults.get(path);
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
    res.writeHead(200, { 'Content-Length': info.size, 'Content-Type': 'application/octet-stream' });
    if (req.method === 'HEAD') res.end();
    else if (fault && 'truncateAt' in fault) {
      // promise the whole file, send part of it, then drop the connection
      createReadStream(file, { end: fault.truncateAt - 1 })
        .on('end', () => res.destroy())
        .pipe(res, { end: false });
    } else createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    faults,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
