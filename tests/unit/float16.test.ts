// Half precision at the engine's edges: exact for every float16 value, and
// rounding to nearest even like hardware and Float16Array.
import { describe, expect, it } from 'vitest';
import { fromHalf, fromHalfBits, toHalf, toHalfBits } from '../../workers/engine/model/float16.ts';

describe('float16 conversion', () => {
  it('every one of the 65536 bit patterns survives float16 -> float32 -> float16', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = fromHalfBits(h);
      if (Number.isNaN(v)) expect((toHalfBits(v) & 0x7c00) === 0x7c00 && (toHalfBits(v) & 0x3ff) !== 0, `NaN ${h}`).toBe(true);
      else expect(toHalfBits(v), `bits ${h.toString(16)}`).toBe(h);
    }
  });

  it('rounds to nearest, ties to even, in normal and subnormal ranges', () => {
    expect(fromHalfBits(toHalfBits(1 + 2 ** -11))).toBe(1); // halfway between 1 and its successor: tie to even (1)
    expect(fromHalfBits(toHalfBits(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9); // halfway, odd below: rounds up
    expect(fromHalfBits(toHalfBits(1 + 2 ** -11 + 2 ** -20))).toBe(1 + 2 ** -10); // just above halfway
    expect(fromHalfBits(toHalfBits(2 ** -25))).toBe(0); // half the smallest subnormal: tie to even (0)
    expect(fromHalfBits(toHalfBits(1.5 * 2 ** -24))).toBe(2 ** -23); // 1.5 subnormal units: tie to even (2)
    expect(fromHalfBits(toHalfBits(2 ** -26))).toBe(0);
    expect(toHalfBits(-0)).toBe(0x8000);
  });

  it('overflows to infinity past 65520 and keeps infinities', () => {
    expect(fromHalfBits(toHalfBits(65504))).toBe(65504);
    expect(fromHalfBits(toHalfBits(65519))).toBe(65504);
    expect(fromHalfBits(toHalfBits(65520))).toBe(Infinity); // the tie rounds to even: the exponent overflows
    expect(fromHalfBits(toHalfBits(1e9))).toBe(Infinity);
    expect(fromHalfBits(toHalfBits(-Infinity))).toBe(-Infinity);
  });

  it('converts arrays both ways, from bits or a native Float16Array', () => {
    const values = Float32Array.from([0, -1.5, 3.14159, 1e-5, 70000, -2.5e-8]);
    const bits = toHalf(values);
    expect(bits).toBeInstanceOf(Uint16Array);
    expect(Array.from(fromHalf(bits))).toEqual(Array.from(values, (v) => fromHalfBits(toHalfBits(v))));
    expect(Array.from(fromHalf([1, 0.5]))).toEqual([1, 0.5]); // what a native Float16Array reads as
  });
});
