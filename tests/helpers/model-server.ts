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

export interface ModelServer {
  url: string;
  requests: { method: string; path: string }[];
  /** Files that answer with a status instead of their bytes (fault injection). */
  faults: Map<string, number>;
  close(): Promise<void>;
}

export async function startModelServer(opts: { root?: string; repos?: ServedRepo[] }): Promise<ModelServer> {
  const requests: { method: string; path: string }[] = [];
  const faults = new Map<string, number>();
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
    if (fault) {
      res.writeHead(fault).end('injected fault');
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
    else createReadStream(file).pipe(res);
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
