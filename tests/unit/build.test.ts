// The build people get: `vite build` ships no test hooks. Fault injection
// (simulateCrash, simulateDeviceLoss) lives in a test-only worker and the
// worker's API reaches the page (window.__engine) only through test.html,
// which only `vite build --mode test` builds.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'vite';
import { afterAll, describe, expect, it } from 'vitest';

describe('npm run build', () => {
  let outDir = '';
  afterAll(async () => outDir && rm(outDir, { recursive: true, force: true }));

  it('ships no test hooks in any bundle', async () => {
    outDir = await mkdtemp(join(tmpdir(), 'sd3-dist-'));
    await build({ logLevel: 'silent', build: { outDir, emptyOutDir: true } });
    const files = (await readdir(outDir, { recursive: true })).filter((f) => /\.(m?js|html)$/.test(f));
    expect(files.some((f) => f.endsWith('index.html'))).toBe(true);
    expect(files.some((f) => f.endsWith('test.html'))).toBe(false);
    const workers = files.filter((f) => /engine\.worker/.test(f));
    expect(workers.length).toBe(1);
    for (const f of files) {
      const text = await readFile(join(outDir, f), 'utf8');
      for (const hook of ['simulateCrash', 'simulateDeviceLoss', '__engine', '__client']) expect(text.includes(hook), `${hook} in ${f}`).toBe(false);
    }
  }, 180_000);
});
