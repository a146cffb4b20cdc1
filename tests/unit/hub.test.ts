// Hub access as huggingface_hub does it, against a real local server in the
// Hub's layout (tests/helpers/model-server.ts): a gated repo loads with a token
// (HF_TOKEN, HF_ENDPOINT, hf:owner/repo/subfolder through the CLI) and is
// refused without one naming the repo, the token and the license page; a 404, a
// missing revision and a refused connection each read differently and name
// their source; revisions resolve to commits and the cache is keyed by them;
// the token is in no stored file, PNG or log; repos list their files with sizes.
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { ModelLoadError } from '../../workers/engine/errors.ts';
import { FileCache } from '../../workers/engine/model/file-cache.ts';
import { parseHubSpec, parseModelArg } from '../../workers/engine/model/hub-spec.ts';
import { HubModelFiles } from '../../workers/engine/model/model-files.ts';
import { nodeCacheBackend } from '../../workers/engine/model/node-file-cache.ts';
import { nodeFolderFiles } from '../../workers/engine/model/node-folder-files.ts';
import { nodeHubToken, withNodeHubDefaults } from '../../workers/engine/model/node-hub.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { servedCommit, startModelServer, type ModelServer, type ServedRepo } from '../helpers/model-server.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

const GATED = 'acme/gated-sd3';
const SUB = 'onnx';
const TOKEN = 'hf_TestTokenThatMustNeverBeStored0123';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out.sort();
}

describe('hf: specs and the environment', () => {
  it('parses owner/repo, a subfolder and a revision; refuses what is not a repo', () => {
    expect(parseModelArg('hf:acme/sd3')).toEqual({ kind: 'hub', repo: 'acme/sd3' });
    expect(parseModelArg('hf:acme/sd3/stable-diffusion-3-medium_io32')).toEqual({ kind: 'hub', repo: 'acme/sd3', subfolder: 'stable-diffusion-3-medium_io32' });
    expect(parseModelArg('hf:acme/sd3/a/b@refs/pr/3')).toEqual({ kind: 'hub', repo: 'acme/sd3', subfolder: 'a/b', revision: 'refs/pr/3' });
    expect(parseModelArg('hf:acme/sd3@0123456789abcdef0123456789abcdef01234567')).toEqual({ kind: 'hub', repo: 'acme/sd3', revision: '0123456789abcdef0123456789abcdef01234567' });
    expect(parseModelArg('https://x.test/m/')).toEqual({ kind: 'url', url: 'https://x.test/m/' });
    expect(parseModelArg('models/here')).toEqual({ kind: 'path', path: 'models/here' });
    for (const bad of ['acme', 'acme/sd3@', 'ac me/sd3']) expect(parseHubSpec(bad)).toBeNull();
    expect(() => parseModelArg('hf:acme')).toThrow(/hf:owner\/repo/);
  });

  it('HF_ENDPOINT names the host; HF_TOKEN, else the token file, gives the token; a given token wins', async () => {
    const home = await mkdtemp(join(tmpdir(), 'sd3-hf-home-'));
    try {
      const spec = { kind: 'hub' as const, repo: 'acme/sd3' };
      expect(withNodeHubDefaults(spec, {}, { HF_ENDPOINT: 'http://mirror.test', HF_TOKEN: 'hf_env' })).toEqual({ spec: { ...spec, host: 'http://mirror.test' }, access: { token: 'hf_env' } });
      expect(withNodeHubDefaults({ ...spec, host: 'http://own.test' }, { token: 'hf_given' }, { HF_ENDPOINT: 'http://mirror.test', HF_TOKEN: 'hf_env' })).toEqual({ spec: { ...spec, host: 'http://own.test' }, access: { token: 'hf_given' } });
      expect(nodeHubToken({ HF_HOME: home })).toBeUndefined();
      await writeFile(join(home, 'token'), 'hf_from_file\n');
      expect(nodeHubToken({ HF_HOME: home })).toBe('hf_from_file');
      expect(nodeHubToken({ HF_HOME: home, HF_TOKEN: 'hf_env' })).toBe('hf_env');
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe('a gated repo on a Hub-layout server', () => {
  let root: string;
  let server: ModelServer;
  let gated: ServedRepo;
  const hub = (extra: object = {}) => ({ kind: 'hub' as const, repo: GATED, subfolder: SUB, host: server.url, ...extra });
  const fileGets = () => server.requests.filter((r) => r.method === 'GET' && r.path.includes('/resolve/'));

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-gated-'));
    await cp(TINY_MODEL_EXTERNAL_DIR, join(root, 'repo', SUB), { recursive: true });
    gated = { repo: GATED, folder: join(root, 'repo'), gatedToken: TOKEN };
    server = await startModelServer({ repos: [gated, { repo: 'acme/open', folder: join(root, 'repo') }] });
  });
  afterAll(async () => {
    await server?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('without a token: the message names the repo, the token and the license page', async () => {
    const err = await createNodeEngine().load(hub()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err).toMatchObject({ failure: 'gated' });
    expect((err as Error).message).toContain(`${GATED} is gated: it needs a Hugging Face token. Accept its license at ${server.url}/${GATED}`);
  });

  it("with a token whose account has not accepted the license: 403, and the message says so", async () => {
    const err = await createNodeEngine().load(hub(), undefined, { hubToken: 'hf_SomeoneElse' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ failure: 'gated' });
    expect((err as Error).message).toMatch(new RegExp(`${GATED} is gated and your token's account has not accepted its license: accept it at ${server.url}/${GATED}`));
    expect(server.requests.some((r) => r.status === 403)).toBe(true);
  });

  it('with the token (HF_TOKEN, HF_ENDPOINT, hf:repo/subfolder through the CLI): loads, generates the same image, and the token is in no file, PNG or log', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd3-gated-cli-'));
    const logged: string[] = [];
    const spies = (['log', 'error', 'warn', 'info'] as const).map((m) => vi.spyOn(console, m).mockImplementation((...a: unknown[]) => void logged.push(a.map(String).join(' '))));
    vi.stubEnv('HF_TOKEN', TOKEN);
    vi.stubEnv('HF_ENDPOINT', server.url);
    server.requests.length = 0;
    let code: number;
    try {
      code = await main(['--model', `hf:${GATED}/${SUB}`, '--prompt', 'a gated cat', '--seed', '5', '--steps', '2', '--out', join(dir, 'out.png'), '--cache-dir', join(dir, 'cache')]);
    } finally {
      vi.unstubAllEnvs();
      for (const s of spies) s.mockRestore();
    }
    try {
      expect(code, logged.join('\n')).toBe(0);
      // every request carried the token; the files came from the resolved commit
      expect(server.requests.every((r) => r.authorization)).toBe(true);
      expect(fileGets().every((r) => r.path.startsWith(`/${GATED}/resolve/${servedCommit(gated)}/${SUB}/`))).toBe(true);
      expect(logged.join('\n')).toContain(`model ${GATED}/${SUB}`);
      // the image is the tiny model's
      const local = await loadTinyEngine();
      const { decode } = await import('fast-png');
      const png = await readFile(join(dir, 'out.png'));
      const ref = await local.generate({ prompt: 'a gated cat', seed: 5, steps: 2 });
      expect(maxPixelDiff(new Uint8ClampedArray(decode(png).data), ref.rgba)).toBe(0);
      // no stored byte holds the token: the PNG (its settings chunks), the cache's files and records, nor any log line
      const stored = [join(dir, 'out.png'), ...(await filesUnder(join(dir, 'cache')))];
      expect(stored.length).toBeGreaterThan(10);
      for (const f of stored) expect((await readFile(f)).includes(TOKEN), relative(dir, f)).toBe(false);
      expect(logged.join('\n')).not.toContain(TOKEN);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the cache is keyed by commit: a second load reads only the revision, a moved branch fetches again, a pinned commit asks nothing', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'sd3-gated-cache-'));
    const cache = () => new FileCache(nodeCacheBackend(cacheDir));
    const load = (extra: object = {}) => createNodeEngine({ fileCache: cache() }).load(hub(extra), undefined, { hubToken: TOKEN });
    const first = servedCommit(gated);
    try {
      await load();
      const keys = (await cache().backend.list()).map((e) => e.key);
      expect(keys.filter((k) => k.includes(`/resolve/${first}/${SUB}/`)).length).toBeGreaterThan(8);
      expect(keys.filter((k) => k.includes('/resolve/main/'))).toEqual([]);

      server.requests.length = 0;
      await load();
      expect(server.requests.map((r) => r.path)).toEqual([`/api/models/${GATED}/revision/main`]);

      gated.commit = 'f'.repeat(40); // main moves
      server.requests.length = 0;
      await load();
      expect(fileGets().filter((r) => r.path.endsWith('transformer/model.onnx_data')).map((r) => r.path)).toEqual([`/${GATED}/resolve/${'f'.repeat(40)}/${SUB}/transformer/model.onnx_data`]);

      // the old commit, pinned: every file from the cache, no request at all (not even for the revision)
      server.requests.length = 0;
      const info = await load({ revision: first });
      expect(server.requests).toEqual([]);
      expect(info.id).toBe(`${GATED}/${SUB}@${first}`);
    } finally {
      delete gated.commit;
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it('a missing repo, revision or file and a refused connection each read differently, naming the source', async () => {
    const engine = createNodeEngine();
    const fail = (spec: Parameters<typeof engine.load>[0]) => engine.load(spec).then(() => null, (e: ModelLoadError) => ({ failure: e.failure, message: e.message }));
    const repo = await fail({ kind: 'hub', repo: 'acme/no-such-repo', host: server.url });
    expect(repo).toEqual({ failure: 'not_found', message: expect.stringContaining(`no repo acme/no-such-repo at ${server.url}`) });
    const revision = await fail(hub({ revision: 'v9' }));
    expect(revision).toEqual({ failure: 'not_found', message: expect.stringContaining(`no revision "v9" in ${GATED}`) });
    server.faults.set(`/acme/open/resolve/main/${SUB}/transformer/model.onnx_data`, 404);
    const file = await fail({ kind: 'hub', repo: 'acme/open', subfolder: SUB, host: server.url });
    server.faults.clear();
    expect(file).toEqual({ failure: 'not_found', message: expect.stringMatching(new RegExp(`^could not load transformer/model\\.onnx_data: no file ${SUB}/transformer/model\\.onnx_data in acme/open at revision main`)) });

    const gone = await startModelServer({ repos: [] });
    const deadUrl = gone.url;
    await gone.close();
    const hubDown = await fail({ kind: 'hub', repo: 'acme/open', host: deadUrl });
    expect(hubDown).toEqual({ failure: 'unreachable', message: expect.stringContaining(`could not reach ${new URL(deadUrl).host} (connection refused) for ${deadUrl}/api/models/acme/open/revision/main`) });
    const urlDown = await fail({ kind: 'url', url: `${deadUrl}/models/sd3/` });
    expect(urlDown).toEqual({ failure: 'unreachable', message: expect.stringContaining(`could not reach ${new URL(deadUrl).host} (connection refused) for ${deadUrl}/models/sd3/`) });
    const messages = [repo, revision, file, hubDown].map((r) => r!.message);
    expect(new Set(messages).size).toBe(4);
    for (const m of messages) expect(m).not.toMatch(/network error after 0 of \? bytes/);
  });

  it('lists the repo\'s files under the subfolder with their sizes (the tree API, through @huggingface/hub), as a folder lists them', async () => {
    const files = new HubModelFiles({ repo: GATED, subfolder: SUB, host: server.url }, { token: TOKEN });
    const listed = await files.list();
    const local = await nodeFolderFiles(join(root, 'repo', SUB)).list!();
    expect(listed).toEqual(local);
    const data = listed!.find((f) => f.path === 'transformer/model.onnx_data')!;
    expect(data.size).toBe((await stat(join(root, 'repo', SUB, 'transformer/model.onnx_data'))).size);
    expect(files.commit).toBe(servedCommit(gated));
  });
});
