// The X/Y plot: up to two axes over prompt lines, seed, guidance, steps,
// size and (with an input image) strength, their values typed as lists ("4.5, 7"), ranges ("1-4", "1-2 (+0.5)",
// "1-10 [4]") or, for seeds, steps from the form's seed ("+1 ×4"). Every cell
// is an ordinary request; the engine runs them all together. Pure: the sheet's
// drawing lives in sheet.ts.
import type { GenerateRequest } from '../../workers/engine/api/types.ts';

export type AxisKind = 'prompt' | 'seed' | 'guidance' | 'steps' | 'size' | 'strength';

export const AXES: { kind: AxisKind; label: string; hint: string }[] = [
  { kind: 'prompt', label: 'Prompt lines', hint: 'each line of the prompt box' },
  { kind: 'seed', label: 'Seed', hint: '1, 2, 3 · 10-13 · +1 ×4' },
  { kind: 'guidance', label: 'CFG scale', hint: '4.5, 7 · 2-8 (+2)' },
  { kind: 'steps', label: 'Steps', hint: '4, 8, 16 · 10-40 [4]' },
  { kind: 'size', label: 'Size', hint: '512x512, 768x512 · 512, 1024' },
  { kind: 'strength', label: 'Strength', hint: '0.3, 0.6, 0.9 · 0.2-1 [5] (needs an input image)' },
];

/** At most this many cells in one plot: each is a request held in memory. */
export const MAX_CELLS = 64;

export type AxisValue = { label: string; apply: (r: GenerateRequest) => void };

export class AxisError extends Error {
  constructor(
    readonly axis: 'x' | 'y',
    message: string,
  ) {
    super(message);
  }
}

const label = (kind: AxisKind) => AXES.find((a) => a.kind === kind)!.label;

function numbers(text: string, integer: boolean, fail: (m: string) => never): number[] {
  const out: number[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    // a-b, a-b (+step), a-b [count]
    const range = /^(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*(?:\(\s*\+\s*(\d+(?:\.\d+)?)\s*\)|\[\s*(\d+)\s*\])?$/.exec(part);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (b < a) fail(`"${part}" runs backwards; write the smaller value first`);
      if (range[4] !== undefined) {
        const n = Number(range[4]);
        if (n < 2) fail(`"${part}": a range of [n] values needs n of at least 2`);
        for (let i = 0; i < n; i++) out.push(a + ((b - a) * i) / (n - 1));
      } else {
        const step = range[3] !== undefined ? Number(range[3]) : 1;
        if (!(step > 0)) fail(`"${part}": the step must be above 0`);
        for (let v = a, i = 0; v <= b + 1e-9; i++, v = a + i * step) out.push(Math.round(v * 1e6) / 1e6);
      }
    } else if (/^-?\d+(?:\.\d+)?$/.test(part)) out.push(Number(part));
    else fail(`"${part}" is not a number or a range (a-b)`);
  }
  if (integer) for (const v of out) if (!Number.isInteger(v)) fail(`${v} is not a whole number`);
  return out.map((v) => (integer ? v : Math.round(v * 1000) / 1000));
}

/** The values of one axis, or an AxisError naming the axis and what is wrong. */
export function parseAxis(axis: 'x' | 'y', kind: AxisKind, text: string, ctx: { prompts: string[]; seed: number; hasImage?: boolean }): AxisValue[] {
  const fail = (m: string): never => {
    throw new AxisError(axis, `${axis.toUpperCase()} axis (${label(kind)}): ${m}`);
  };
  let values: AxisValue[];
  switch (kind) {
    case 'prompt':
      values = ctx.prompts.map((p) => ({ label: p || '(empty prompt)', apply: (r) => void (r.prompt = p) }));
      break;
    case 'seed': {
      const rel = /^\+\s*(\d+)\s*[×x*]\s*(\d+)$/.exec(text.trim());
      const seeds = rel ? Array.from({ length: Number(rel[2]) }, (_, i) => ctx.seed + i * Number(rel[1])) : numbers(text, true, fail);
      values = seeds.map((s) => ({ label: String(s), apply: (r) => void (r.seed = s) }));
      break;
    }
    case 'guidance':
      values = numbers(text, false, fail).map((g) => ({ label: String(g), apply: (r) => void (r.guidance = g) }));
      break;
    case 'steps':
      values = numbers(text, true, fail).map((n) => ({ label: String(n), apply: (r) => void (r.steps = n) }));
      break;
    case 'size':
      values = text
        .split(',')
        .map((p) => p.trim())
        .filter(Boolean)
        .map((part) => {
          const m = /^(\d+)(?:\s*[x×]\s*(\d+))?$/.exec(part);
          if (!m) fail(`"${part}" is not a size (WxH, or one number for a square)`);
          const [w, h] = [Number(m![1]), Number(m![2] ?? m![1])];
          return { label: `${w}×${h}`, apply: (r: GenerateRequest) => void ((r.width = w), (r.height = h)) };
        });
      break;
    case 'strength':
      // how much of the image each cell reworks: only an image request has one
      if (!ctx.hasImage) fail('strength needs an input image: put one in the prompt form’s Image slot');
      values = numbers(text, false, fail).map((v) => {
        if (!(v > 0 && v <= 1)) fail(`${v} is not a strength; each is in (0, 1]`);
        return { label: String(v), apply: (r: GenerateRequest) => void (r.strength = v) };
      });
      break;
  }
  if (!values.length) fail(kind === 'prompt' ? 'the prompt box has no lines' : 'no values; for example ' + AXES.find((a) => a.kind === kind)!.hint);
  return values;
}

export interface XYPlan {
  x: { kind: AxisKind; title: string; values: string[] } | null;
  y: { kind: AxisKind; title: string; values: string[] } | null;
  /** Row-major: row r, column c at r * columns + c. */
  cells: { col: number; row: number; request: GenerateRequest }[];
  columns: number;
  rows: number;
}

/** Every cell's request: the form's settings, then the X value, then the Y value. */
export function planXY(base: Omit<GenerateRequest, 'prompt'> & { prompt: string }, x: { kind: AxisKind; values: AxisValue[] } | null, y: { kind: AxisKind; values: AxisValue[] } | null): XYPlan {
  if (x && y && x.kind === y.kind) throw new AxisError('y', `X and Y are both ${label(x.kind)}; choose two different axes`);
  const xs = x?.values ?? [{ label: '', apply: () => undefined }];
  const ys = y?.values ?? [{ label: '', apply: () => undefined }];
  if (xs.length * ys.length > MAX_CELLS) throw new AxisError(x ? 'x' : 'y', `${xs.length} × ${ys.length} = ${xs.length * ys.length} cells; at most ${MAX_CELLS} in one plot`);
  const cells: XYPlan['cells'] = [];
  ys.forEach((yv, row) =>
    xs.forEach((xv, col) => {
      const request: GenerateRequest = { ...base };
      xv.apply(request);
      yv.apply(request);
      cells.push({ col, row, request });
    }),
  );
  const axis = (a: typeof x) => a && { kind: a.kind, title: label(a.kind), values: a.values.map((v) => v.label) };
  return { x: axis(x), y: axis(y), cells, columns: xs.length, rows: ys.length };
}

/** The sheet's geometry: a title band, column labels, row labels, one cell per image (small images drawn at 2× or more). */
export const SHEET = { titleHeight: 32, labelHeight: 40, labelWidth: 160, minCell: 128 } as const;

export function sheetLayout(columns: number, rows: number, width: number, height: number) {
  const scale = Math.max(1, Math.ceil(SHEET.minCell / Math.max(width, height)));
  const cellW = width * scale;
  const cellH = height * scale;
  const left = SHEET.labelWidth;
  const top = SHEET.titleHeight + SHEET.labelHeight;
  return { scale, cellW, cellH, left, top, width: left + columns * cellW, height: top + rows * cellH };
}
