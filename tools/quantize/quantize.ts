// Weight-only quantization of an SD3 model folder to onnxruntime's
// com.microsoft.MatMulNBits (8 or 4 bits, block-wise along K, asymmetric with
// zero points, as onnxruntime's own MatMulNBitsQuantizer writes it):
//
//   npm run quantize -- IN OUT --bits 8|4 --block 32|64|128
//     [--components transformer,text_encoder_3] [--all-linear | --keep REGEX] [--min-k N]
//     [--accuracy-level 0..4] [--shard-mb N] [--force] [--json]
//
// IN and OUT are model folders in Optimum's ONNX layout. Each chosen
// component's MatMul / Gemm weights (constant 2-D fp32 or fp16 initializers)
// are packed; everything else in OUT is a copy of IN (files copied, never read
// into memory). Kept in their own precision unless asked: the final
// projections (proj_out, text_projection), the embedders (pos_embed,
// time_text_embed, context_embedder) and the norms' linears (adaLN modulation:
// norm1.linear, norm1_context.linear, norm_out.linear; diffusers' own
// precision-sensitive patterns for SD3 are "pos_embed" and "norm"), and
// weights with K under one block. --all-linear packs all of them; --keep
// replaces the pattern. The graph is read in place and weights one at a time,
// so memory stays near the largest weight whatever the model's size.
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import type { Bits } from './blockwise.ts';
import { quantizeComponent, type ComponentReport } from './component.ts';

export const DEFAULT_COMPONENTS = ['transformer', 'text_encoder_3'];
/** Module-path segments kept in their own precision by default (node names `/m/transformer_blocks.0/norm1/linear/Gemm`, weights `transformer_blocks.0.norm1.linear.weight`). */
export const DEFAULT_KEEP = /(^|[./])(proj_out|text_projection|pos_embed|time_text_embed|context_embedder|norm[a-z0-9_]*)([./]|$)/;
export const BLOCK_SIZES = [32, 64, 128];

export interface QuantizeOptions {
  bits: Bits;
  block: number;
  /** Component folders; default: those of DEFAULT_COMPONENTS that IN has. */
  components?: string[];
  /** Node or weight names kept as they are; default DEFAULT_KEEP, null: none (--all-linear). */
  keep?: RegExp | null;
  /** Weights with K under this stay (default: the block size). */
  minK?: number;
  accuracyLevel?: number;
  shardBytes?: number;
  /** Replace OUT if it exists. */
  force?: boolean;
}

export interface QuantizeReport {
  input: string;
  output: string;
  bits: Bits;
  block: number;
  minK: number;
  /** The keep pattern's source, or null (--all-linear). */
  keep: string | null;
  components: ComponentReport[];
  /** Files and folders copied as they are, relative to IN. */
  copied: string[];
  /** Peak resident memory of this process, bytes. */
  peakRssBytes: number;
  seconds: number;
}

/** A refusal of the arguments: the CLI exits 2 with its message. */
export class UsageError extends Error {}

const isDir = (p: string) => existsSync(p) && statSync(p).isDirectory();

export function quantizeModel(input: string, output: string, opts: QuantizeOptions): QuantizeReport {
  const started = performance.now();
  const inDir = resolve(input);
  const outDir = resolve(output);
  if (!isDir(inDir)) throw new UsageError(`IN: ${input} is not a folder`);
  if (opts.bits !== 4 && opts.bits !== 8) throw new UsageError(`--bits: expected 4 or 8, got ${opts.bits}`);
  if (!BLOCK_SIZES.includes(opts.block)) throw new UsageError(`--block: expected ${BLOCK_SIZES.join(', ')}, got ${opts.block}`);
  const within = (root: string, p: string) => {
    const r = relative(root, p);
    return r !== '..' && !r.startsWith(`..${sep}`) && !isAbsolute(r);
  };
  if (within(inDir, outDir)) throw new UsageError(`OUT: ${output} is IN or inside it`);
  if (within(outDir, inDir)) throw new UsageError(`OUT: ${output} contains IN`);
  const components = opts.components ?? DEFAULT_COMPONENTS.filter((c) => existsSync(join(inDir, c, 'model.onnx')));
  if (!components.length) throw new UsageError(`IN: ${input} has none of ${DEFAULT_COMPONENTS.join(', ')} (a folder with model.onnx); name the components with --components`);
  for (const c of components) {
    if (!/^[A-Za-z0-9_.-]+$/.test(c) || c === '.' || c === '..') throw new UsageError(`--components: "${c}" is not a component folder name`);
    if (!existsSync(join(inDir, c, 'model.onnx'))) throw new UsageError(`--components: ${input} has no ${c} (no ${join(c, 'model.onnx')})`);
  }
  if (existsSync(outDir) && readdirSync(outDir).length) {
    if (!opts.force) throw new UsageError(`OUT: ${output} exists and is not empty (--force replaces it)`);
    rmSync(outDir, { recursive: true, force: true });
  }
  mkdirSync(outDir, { recursive: true });

  const keep = opts.keep === undefined ? DEFAULT_KEEP : opts.keep;
  const reports: ComponentReport[] = [];
  const copied: string[] = [];
  try {
    for (const c of components) {
      mkdirSync(join(outDir, c), { recursive: true });
      reports.push(
        quantizeComponent(c, join(inDir, c), join(outDir, c), {
          bits: opts.bits,
          block: opts.block,
          keep,
          minK: opts.minK ?? opts.block,
          accuracyLevel: opts.accuracyLevel,
          shardBytes: opts.shardBytes,
        }),
      );
    }
    // the rest as it is: other folders and files whole, a quantized component's other files (config.json)
    const copy = (from: string, to: string, name: string) => {
      cpSync(from, to, { recursive: true, errorOnExist: true, force: false });
      copied.push(name);
    };
    for (const e of readdirSync(inDir, { withFileTypes: true })) {
      const i = components.indexOf(e.name);
      if (i < 0) {
        copy(join(inDir, e.name), join(outDir, e.name), e.name);
        continue;
      }
      const skip = new Set(['model.onnx', ...reports[i].inputDataFiles]);
      for (const f of readdirSync(join(inDir, e.name))) if (!skip.has(f)) copy(join(inDir, e.name, f), join(outDir, e.name, f), `${e.name}/${f}`);
    }
  } catch (e) {
    // no half-written model is left behind
    rmSync(outDir, { recursive: true, force: true });
    throw e;
  }
  return {
    input: inDir,
    output: outDir,
    bits: opts.bits,
    block: opts.block,
    minK: opts.minK ?? opts.block,
    keep: keep?.source ?? null,
    components: reports,
    copied: copied.sort(),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    seconds: (performance.now() - started) / 1000,
  };
}

const mb = (n: number) => `${(n / 1024 ** 2).toFixed(n < 1024 ** 2 ? 3 : 1)} MB`;

/** The report as people read it. */
export function formatReport(r: QuantizeReport): string {
  const lines: string[] = [];
  for (const c of r.components) {
    const label = { pattern: 'by the keep pattern', small: `with K under ${r.minK}`, unsupported: 'not supported' };
    const reasons = new Map<string, number>();
    for (const k of c.kept) reasons.set(label[k.rule], (reasons.get(label[k.rule]) ?? 0) + 1);
    const total = c.quantized.length + c.kept.length;
    lines.push(`${c.component}: ${c.quantized.length} of ${total} weight MatMul/Gemm quantized to ${r.bits} bits (block ${r.block}), ${c.kept.length} kept${c.kept.length ? `: ${[...reasons].map(([w, n]) => `${n} ${w}`).join('; ')}` : ''}`);
    lines.push(`  ${mb(c.bytesBefore)} -> ${mb(c.bytesAfter)} (${(c.bytesAfter / c.bytesBefore).toFixed(3)}x); ${(c.parametersQuantized / 1e6).toFixed(2)} M weights in ${r.bits} bits; files ${c.files.join(', ')}`);
  }
  lines.push(`copied as is: ${r.copied.length} files and folders`);
  lines.push(`peak RSS ${mb(r.peakRssBytes)}; ${r.seconds.toFixed(1)} s; written to ${r.output}`);
  return lines.join('\n');
}

export const USAGE = `usage: npm run quantize -- IN OUT --bits 8|4 --block ${BLOCK_SIZES.join('|')}
  [--components ${DEFAULT_COMPONENTS.join(',')}] [--all-linear | --keep REGEX] [--min-k N]
  [--accuracy-level 0..4] [--shard-mb N] [--force] [--json]
  --components   component folders to quantize (default: ${DEFAULT_COMPONENTS.join(', ')} where present)
  --all-linear   also quantize what is kept by default: ${DEFAULT_KEEP.source}
  --keep REGEX   keep the MatMuls whose node or weight name matches REGEX instead
  --min-k N      keep weights with fewer than N rows (default: the block size)
  --shard-mb N   split each component's external data into files of at most N MB
  --json         print the report as JSON`;

const int = (v: string | undefined, flag: string, ok: (n: number) => boolean, expected: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || !ok(n)) throw new UsageError(`${flag}: expected ${expected}, got ${v}`);
  return n;
};

/** The CLI: returns the exit status (0, 1 on a failure, 2 on bad arguments). */
export function main(argv: string[]): number {
  let opts: QuantizeOptions;
  let positionals: string[];
  let json = false;
  try {
    let values;
    try {
      ({ values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          bits: { type: 'string' },
          block: { type: 'string' },
          components: { type: 'string' },
          'all-linear': { type: 'boolean', default: false },
          keep: { type: 'string' },
          'min-k': { type: 'string' },
          'accuracy-level': { type: 'string' },
          'shard-mb': { type: 'string' },
          force: { type: 'boolean', default: false },
          json: { type: 'boolean', default: false },
          help: { type: 'boolean', default: false },
        },
      }));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length < 1) throw new UsageError('IN: the model folder to read is required');
    if (positionals.length < 2) throw new UsageError('OUT: the folder to write is required');
    if (positionals.length > 2) throw new UsageError(`expected IN and OUT, got ${positionals.length} folders: ${positionals.join(' ')}`);
    if (values.bits === undefined) throw new UsageError('--bits: required (8 or 4)');
    const bits = int(values.bits, '--bits', (n) => n === 4 || n === 8, '4 or 8') as Bits;
    if (values.block === undefined) throw new UsageError(`--block: required (${BLOCK_SIZES.join(', ')})`);
    const block = int(values.block, '--block', (n) => BLOCK_SIZES.includes(n), BLOCK_SIZES.join(', '))!;
    if (values['all-linear'] && values.keep !== undefined) throw new UsageError('--keep: not with --all-linear');
    let keep: RegExp | null | undefined;
    if (values['all-linear']) keep = null;
    else if (values.keep !== undefined) {
      try {
        keep = new RegExp(values.keep);
      } catch (e) {
        throw new UsageError(`--keep: ${(e as Error).message}`);
      }
    }
    const components = values.components?.split(',').map((c) => c.trim());
    if (components && (!components.length || components.some((c) => !c))) throw new UsageError(`--components: expected comma-separated component folders, got "${values.components}"`);
    opts = {
      bits,
      block,
      components,
      keep,
      minK: int(values['min-k'], '--min-k', (n) => n >= 1, 'an integer >= 1'),
      accuracyLevel: int(values['accuracy-level'], '--accuracy-level', (n) => n >= 0 && n <= 4, '0, 1, 2, 3 or 4'),
      shardBytes: (int(values['shard-mb'], '--shard-mb', (n) => n >= 1 && n <= 2047, 'an integer in 1..2047') ?? 0) * 1024 ** 2 || undefined,
      force: values.force,
    };
    json = values.json!;
    const report = quantizeModel(positionals[0], positionals[1], opts);
    console.log(json ? JSON.stringify(report, null, 2) : formatReport(report));
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\n${USAGE}`);
      return 2;
    }
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}

if (process.argv[1]?.endsWith('quantize.ts')) process.exitCode = main(process.argv.slice(2));
