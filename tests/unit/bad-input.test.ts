// Bad input, tried systematically: every request field against a table of
// wrong types, non-finite, negative, huge and fractional values; whole requests
// of the wrong shape; unknown fields; and the CLI's flags. Each must give an
// error naming the field (or a documented normalisation), settle quickly, and
// leave the engine serving. Weird-but-valid input (unicode, limits, long
// prompts) must work, with a warning where the prompt was cut.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { LIMITS } from '../../workers/engine/api/validate.ts';
import { InvalidRequestError } from '../../workers/engine/errors.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const settle = <T>(p: Promise<T>, ms = 10_000) =>
  Promise.race([p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e })), new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`did not settle in ${ms} ms`)), ms))]);

// values no numeric field accepts
const NOT_NUMBERS: unknown[] = [null, true, false, '7', '', ' ', '1e3', [], [7], {}, { value: 7 }, () => 7, Symbol('x'), 10n];
const NON_FINITE = [NaN, Infinity, -Infinity];
const HUGE = [1e308, Number.MAX_VALUE, 2 ** 53, Number.MAX_SAFE_INTEGER + 2, 1e21];
const FRACTIONS = [0.5, 1.0000001, -0.5, 1e-300, Math.PI];
const NEGATIVE = [-1, -(2 ** 31), -1e9];
const NOT_STRINGS: unknown[] = [null, 7, 0, true, [], ['a'], {}, { toString: () => 'x' }, NaN];

type Case = { name: string; request: unknown; field: string };

function cases(): Case[] {
  const out: Case[] = [];
  const add = (field: string, values: unknown[], base: Record<string, unknown> = { prompt: 'x' }) => {
    for (const v of values) out.push({ name: `${field} = ${show(v)}`, request: { ...base, [field]: v }, field });
  };
  const integerField = (field: string, extraBad: unknown[]) => add(field, [...NOT_NUMBERS, ...NON_FINITE, ...HUGE, ...FRACTIONS, ...extraBad]);
  integerField('steps', [0, -1, LIMITS.steps.max + 1, 1000, ...NEGATIVE]);
  integerField('seed', [...NEGATIVE, 2 ** 32, 2 ** 40]);
  integerField('width', [0, 8, 15, 17, 70, 513, 528, 4096, ...NEGATIVE]);
  integerField('height', [0, 8, 15, 17, 70, 513, 528, 4096, ...NEGATIVE]);
  add('guidance', [...NOT_NUMBERS, ...NON_FINITE, ...HUGE, -0.001, -1, 100.5, 1000]);
  add('prompt', [...NOT_STRINGS, '', ' ', '\n\t ', '\u3000', 'x'.repeat(LIMITS.promptChars + 1)]);
  add('negativePrompt', [...NOT_STRINGS, 'y'.repeat(LIMITS.promptChars + 1)]);
  add('id', [...NOT_STRINGS, '', 'has space', 'slash/es', 'x'.repeat(129), '<script>', 'ünïcode', '../etc']);
  for (const key of ['sampler', 'scheduler', 'batch_size', 'Prompt', 'STEPS', '__proto__', 'constructor', 'num_inference_steps', 'guidance_scale', ''])
    out.push({ name: `unknown field ${JSON.stringify(key)}`, request: JSON.parse(`{"prompt":"x",${JSON.stringify(key)}:1}`), field: key });
  for (const r of [null, undefined, 7, 'a prompt', [], [{ prompt: 'x' }], true, () => ({ prompt: 'x' })]) out.push({ name: `request = ${show(r)}`, request: r, field: 'request' });
  out.push({ name: 'missing prompt', request: { steps: 2 }, field: 'prompt' });
  return out;
}

function show(v: unknown): string {
  if (typeof v === 'string') return v.length > 12 ? `string(${v.length})` : JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

describe('hundreds of malformed requests', () => {
  const table = cases();

  it(`has a few hundred cases (${table.length})`, () => {
    expect(table.length).toBeGreaterThanOrEqual(200);
  });

  it('each is refused with an error naming its field, quickly, while a good request in flight is untouched', async () => {
    const engine = await loadTinyEngine();
    const reference = await engine.generate({ prompt: 'steady', seed: 77, steps: 2 });
    const inFlight = engine.generate({ prompt: 'steady', seed: 77, steps: 2 });
    const failures: string[] = [];
    for (const c of table) {
      const r = await settle(engine.generate(c.request as never));
      if (r.ok) failures.push(`${c.name}: accepted`);
      else if (!(r.e instanceof InvalidRequestError)) failures.push(`${c.name}: ${String(r.e)}`);
      else if (r.e.field !== c.field) failures.push(`${c.name}: named ${r.e.field}, not ${c.field}`);
      else if (!r.e.message.startsWith(`${c.field}: expected `)) failures.push(`${c.name}: message "${r.e.message}"`);
    }
    expect(failures).toEqual([]);
    expect(maxPixelDiff((await inFlight).rgba, reference.rgba)).toBe(0);
    const s = engine.status();
    expect(s.requestsActive + s.requestsQueued).toBe(0);
    expect(s.requestBytes).toBe(0);
  });

  it('weird but valid input works, as documented', async () => {
    const engine = await loadTinyEngine();
    const ok = async (req: Record<string, unknown>) => (await engine.generate({ steps: 1, ...req } as never)).metadata;
    expect((await ok({ prompt: '🦊🔥 عربى 中文 ñ e\u0301 \u200b\u200d 𝔘𝔫𝔦𝔠𝔬𝔡𝔢', seed: 0 })).seed).toBe(0);
    expect((await ok({ prompt: 'x', seed: 2 ** 32 - 1 })).seed).toBe(2 ** 32 - 1);
    expect((await ok({ prompt: 'x', seed: -0 })).seed).toBe(0); // -0 is the integer 0
    expect(await ok({ prompt: 'x', width: 16, height: 512, guidance: 0 })).toMatchObject({ width: 16, height: 512, guidance: 0 });
    expect((await ok({ prompt: 'x', negativePrompt: '' })).negativePrompt).toBe('');
    expect((await ok({ prompt: 'x', steps: undefined })).steps).toBe(4); // undefined means "default"
    expect((await ok({ prompt: 'x', id: 'job:1.a-b_c' })).id).toBe('job:1.a-b_c');
    // a prompt over the tokenizers' limit is cut, and the result says so
    const long = await ok({ prompt: 'a very long prompt '.repeat(LIMITS.promptChars / 19 - 1), negativePrompt: 'blurry '.repeat(200), guidance: 4.5 });
    expect(long.warnings).toEqual(['prompt: longer than the text encoders accept; the end was cut off', 'negativePrompt: longer than the text encoders accept; the end was cut off']);
    expect((await ok({ prompt: 'short' })).warnings).toEqual([]);
  });
});

describe('the CLI with bad flags', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sd3-cli-bad-'));
    await writeFile(join(dir, 'empty.txt'), '\n\n');
    vi.spyOn(console, 'log').mockImplementation(() => undefined);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  const model = ['--model', TINY_MODEL_DIR];
  const out = () => ['--out', join(dir, 'x.png')];
  const table: [string[], number, RegExp][] = [
    [['--prompt', 'x', '--steps', 'abc'], 1, /steps: expected an integer in 1\.\.500, got NaN/],
    [['--prompt', 'x', '--steps', ''], 1, /steps: expected/],
    [['--prompt', 'x', '--steps', '0'], 1, /steps: expected an integer in 1\.\.500, got 0/],
    [['--prompt', 'x', '--steps', '2.5'], 1, /steps: expected an integer/],
    [['--prompt', 'x', '--steps', '1e9'], 1, /steps: expected/],
    [['--prompt', 'x', '--seed=-1'], 1, /seed: expected an integer in 0\.\.4294967295, got -1/],
    [['--prompt', 'x', '--seed', '-1'], 2, /'--seed' argument is ambiguous[\s\S]*--seed=-XYZ/],
    [['--prompt', 'x', '--seed', 'lucky'], 1, /seed: expected/],
    [['--prompt', 'x', '--guidance', 'NaN'], 1, /guidance: expected a finite number/],
    [['--prompt', 'x', '--guidance', 'Infinity'], 1, /guidance: expected a finite number/],
    [['--prompt', 'x', '--size', '70'], 1, /width: expected an integer in 16\.\.512, a multiple of 16, got 70/],
    [['--prompt', 'x', '--width', '4096'], 1, /width: expected/],
    [['--prompt', 'x', '--height=-16'], 1, /height: expected/],
    [['--prompt', '   '], 1, /prompt: expected a non-empty string/],
    [['--prompt', 'x', '--concurrency', '0'], 2, /--concurrency: expected an integer in 1\.\.256, got 0/],
    [['--prompt', 'x', '--concurrency', 'many'], 2, /--concurrency/],
    [['--prompt', 'x', '--max-batch', '100'], 2, /--max-batch: expected an integer in 1\.\.64/],
    [['--prompt', 'x', '--sampler', 'ddim'], 2, /Unknown option '--sampler'/],
    [['--steps', '4'], 2, /exactly one of --prompt and --prompts/],
    [['--prompt', 'x', '--prompts', 'p.txt'], 2, /exactly one of --prompt and --prompts/],
    [['--prompts', '/nonexistent/prompts.txt'], 2, /--prompts: cannot read \/nonexistent\/prompts\.txt \(ENOENT\)/],
    [['--prompts', 'EMPTY'], 2, /--prompts: .* has no prompts/],
    [['--model', '/nonexistent/model', '--prompt', 'x'], 1, /could not load model_index\.json/],
  ];

  it.each(table)('%j → exit %i naming the problem', async (args, code, message) => {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void errors.push(a.join(' ')));
    const argv = args.map((a) => (a === 'EMPTY' ? join(dir, 'empty.txt') : a));
    const withModel = argv.includes('--model') ? argv : [...model, ...argv];
    const r = await settle(main([...withModel, ...out()]));
    spy.mockRestore();
    expect(r.ok).toBe(true);
    expect(r.ok && r.v).toBe(code);
    expect(errors.join('\n')).toMatch(message);
  });
});
