// The quantizer's memory against the size of what it reads: an SD3-medium
// transformer at real width (the project's builder, fast weights, N blocks)
// quantized by the CLI in a child process, whose peak RSS is read from the
// tool's own report (process.resourceUsage().maxRSS) and from
// `/usr/bin/time -v` where it exists.
//
//   npx tsx tools/quantize/measure-rss.ts [--layers N] [--weights fp32|fp16] [--bits 4|8] [--block 32]
//     [--dir models/quantize-rss] [--all-linear] [--keep-files]
//
// The model is built into --dir (git-ignored models/ by default) and removed
// afterwards unless --keep-files. tests/unit/quantize.test.ts runs the same at
// one block; 24 blocks is the whole SD3-medium transformer (~8.3 GB in fp32).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildTransformer } from '../model-builder/components.ts';
import type { FloatType } from '../model-builder/onnx-graph.ts';
import { PRESETS, withDepth } from '../model-builder/presets.ts';
import { ExternalData, FolderOutput } from '../model-builder/weight-store.ts';
import type { QuantizeReport } from './quantize.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** An SD3-medium transformer of `layers` blocks in `dir/transformer` (external data); returns the bytes of its files. */
export function buildLargeTransformer(dir: string, layers: number, weights: FloatType = 'float32'): number {
  const out = new FolderOutput(dir);
  const cfg = withDepth(PRESETS['sd3-medium'], { layers }).transformer;
  const external = new ExternalData(out, 'transformer', 'model.onnx_data');
  const g = buildTransformer(cfg, { weights, io: 'float32', attention: 'decomposed' }, { external, fastWeights: true });
  external.close();
  out.file('transformer/model.onnx', g.serialize());
  writeFileSync(join(dir, 'model_index.json'), `${JSON.stringify({ _class_name: 'StableDiffusion3Pipeline', transformer: ['diffusers', 'SD3Transformer2DModel'] }, null, 2)}\n`);
  return ['model.onnx', 'model.onnx_data'].reduce((a, f) => a + statSync(join(dir, 'transformer', f)).size, 0);
}

export interface ChildRun {
  code: number | null;
  report: QuantizeReport | null;
  /** Peak RSS from /usr/bin/time -v (null where it is missing). */
  timeMaxRssBytes: number | null;
  stderr: string;
  seconds: number;
}

/** `npm run quantize -- args --json` in a child process (node --import tsx), under /usr/bin/time -v when there is one. */
export function quantizeInChild(args: string[]): Promise<ChildRun> {
  const node = [process.execPath, '--import', 'tsx', join(REPO, 'tools/quantize/quantize.ts'), ...args, '--json'];
  const time = existsSync('/usr/bin/time');
  const [cmd, ...rest] = time ? ['/usr/bin/time', '-v', ...node] : node;
  const started = performance.now();
  const child = spawn(cmd, rest, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((done, fail) => {
    child.on('error', fail);
    child.on('close', (code) => {
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      let report: QuantizeReport | null = null;
      try {
        report = JSON.parse(stdout) as QuantizeReport;
      } catch {
        report = null;
      }
      done({ code, report, timeMaxRssBytes: rss ? Number(rss[1]) * 1024 : null, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

const mb = (n: number | null) => (n === null ? 'n/a' : `${(n / 1024 ** 2).toFixed(1)} MB`);

if (process.argv[1]?.endsWith('measure-rss.ts')) {
  const { values: a } = parseArgs({
    options: {
      layers: { type: 'string', default: '2' },
      weights: { type: 'string', default: 'fp32' },
      bits: { type: 'string', default: '4' },
      block: { type: 'string', default: '32' },
      dir: { type: 'string', default: 'models/quantize-rss' },
      'all-linear': { type: 'boolean', default: false },
      'keep-files': { type: 'boolean', default: false },
    },
  });
  const root = resolve(a.dir!);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const inDir = join(root, 'in');
  const outDir = join(root, 'out');
  const t0 = performance.now();
  const inputBytes = buildLargeTransformer(inDir, Number(a.layers), a.weights === 'fp16' ? 'float16' : 'float32');
  console.log(`built sd3-medium transformer, ${a.layers} blocks, ${a.weights}: ${mb(inputBytes)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const run = await quantizeInChild([inDir, outDir, '--bits', a.bits!, '--block', a.block!, '--components', 'transformer', ...(a['all-linear'] ? ['--all-linear'] : [])]);
  if (run.code !== 0 || !run.report) {
    console.error(run.stderr);
    process.exit(1);
  }
  const c = run.report.components[0];
  console.log(`quantized in ${run.seconds.toFixed(1)} s: ${c.quantized.length} of ${c.quantized.length + c.kept.length} weights, ${mb(c.bytesBefore)} -> ${mb(c.bytesAfter)}`);
  console.log(`peak RSS: ${mb(run.report.peakRssBytes)} (the tool's report), ${mb(run.timeMaxRssBytes)} (/usr/bin/time -v); input ${mb(inputBytes)}: ${(run.report.peakRssBytes / inputBytes).toFixed(3)}x`);
  if (!a['keep-files']) rmSync(root, { recursive: true, force: true });
}
