// The studio's pure parts: X/Y axis values, the plot's cells and sheet size, aspect presets.
import { describe, expect, it } from 'vitest';
import { sizeForAspect, aspectOf } from '../../src/lib/aspect.ts';
import { AxisError, MAX_CELLS, parseAxis, planXY, sheetLayout } from '../../src/lib/xy-plot.ts';

const ctx = { prompts: ['a fox', 'a cat'], seed: 100 };
const labels = (kind: Parameters<typeof parseAxis>[1], text: string) => parseAxis('x', kind, text, ctx).map((v) => v.label);

describe('X/Y plot', () => {
  it('reads lists, ranges with a step or a count, and seeds relative to the form', () => {
    expect(labels('guidance', '4.5, 7')).toEqual(['4.5', '7']);
    expect(labels('steps', '1-4')).toEqual(['1', '2', '3', '4']);
    expect(labels('guidance', '2-3 (+0.25)')).toEqual(['2', '2.25', '2.5', '2.75', '3']);
    expect(labels('steps', '10-40 [4]')).toEqual(['10', '20', '30', '40']);
    expect(labels('seed', '+1 ×4')).toEqual(['100', '101', '102', '103']);
    expect(labels('seed', '+5 x2')).toEqual(['100', '105']);
    expect(labels('seed', '7, 9-10')).toEqual(['7', '9', '10']);
    expect(labels('size', '512x768, 1024')).toEqual(['512×768', '1024×1024']);
    expect(labels('prompt', 'ignored')).toEqual(['a fox', 'a cat']);
  });

  it('names the axis and what is wrong', () => {
    const err = (kind: Parameters<typeof parseAxis>[1], text: string) => {
      try {
        parseAxis('y', kind, text, ctx);
      } catch (e) {
        expect(e).toBeInstanceOf(AxisError);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(err('guidance', '4.5, much')).toBe('Y axis (CFG scale): "much" is not a number or a range (a-b)');
    expect(err('steps', '2.5')).toBe('Y axis (Steps): 2.5 is not a whole number');
    expect(err('steps', '9-3')).toBe('Y axis (Steps): "9-3" runs backwards; write the smaller value first');
    expect(err('size', '12 by 3')).toBe('Y axis (Size): "12 by 3" is not a size (WxH, or one number for a square)');
    expect(err('seed', '')).toBe('Y axis (Seed): no values; for example 1, 2, 3 · 10-13 · +1 ×4');
  });

  it('plans row-major cells with both values applied, and refuses more than MAX_CELLS', () => {
    const x = { kind: 'guidance' as const, values: parseAxis('x', 'guidance', '2, 5', ctx) };
    const y = { kind: 'seed' as const, values: parseAxis('y', 'seed', '+1 ×3', ctx) };
    const plan = planXY({ prompt: 'p', steps: 4, seed: 1 }, x, y);
    expect([plan.columns, plan.rows]).toEqual([2, 3]);
    expect(plan.cells.map((c) => [c.col, c.row, c.request.guidance, c.request.seed])).toEqual([
      [0, 0, 2, 100],
      [1, 0, 5, 100],
      [0, 1, 2, 101],
      [1, 1, 5, 101],
      [0, 2, 2, 102],
      [1, 2, 5, 102],
    ]);
    expect(plan.cells.every((c) => c.request.prompt === 'p' && c.request.steps === 4)).toBe(true);
    expect(plan.y).toEqual({ kind: 'seed', title: 'Seed', values: ['100', '101', '102'] });
    const big = { kind: 'steps' as const, values: parseAxis('x', 'steps', '1-9', ctx) };
    expect(() => planXY({ prompt: 'p' }, big, { kind: 'guidance', values: parseAxis('y', 'guidance', '1-9', ctx) })).toThrow(`9 × 9 = 81 cells; at most ${MAX_CELLS} in one plot`);
    expect(() => planXY({ prompt: 'p' }, big, big)).toThrow('X and Y are both Steps; choose two different axes');
  });

  it('sheet: small images drawn at 2× or more, large ones at 1×', () => {
    expect(sheetLayout(2, 3, 64, 64)).toMatchObject({ scale: 2, width: 160 + 2 * 128, height: 72 + 3 * 128 });
    expect(sheetLayout(3, 1, 1024, 576)).toMatchObject({ scale: 1, width: 160 + 3 * 1024, height: 72 + 576 });
  });
});

describe('aspect presets', () => {
  const real = { minSize: 256, maxSize: 1536, sizeMultiple: 16 };
  it('keep about the default area on the model’s size grid', () => {
    expect(sizeForAspect('1:1', 1024, real)).toEqual({ width: 1024, height: 1024 });
    expect(sizeForAspect('3:2', 1024, real)).toEqual({ width: 1248, height: 832 });
    expect(sizeForAspect('2:3', 1024, real)).toEqual({ width: 832, height: 1248 });
    expect(sizeForAspect('16:9', 1024, real)).toEqual({ width: 1360, height: 768 });
    expect(sizeForAspect('9:16', 1024, real)).toEqual({ width: 768, height: 1360 });
    expect(aspectOf(1360, 768, 1024, real)).toBe('16:9');
    expect(aspectOf(1000, 768, 1024, real)).toBeNull();
  });
  it('stay within the model’s limits', () => {
    expect(sizeForAspect('16:9', 64, { minSize: 16, maxSize: 80, sizeMultiple: 16 })).toEqual({ width: 80, height: 48 });
  });
});
