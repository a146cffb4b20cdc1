// Block-wise weight quantization in the layout of onnxruntime's
// com.microsoft.MatMulNBits, with onnxruntime's own rules: what its Python
// MatMulNBitsQuantizer gets from quantize_matmul_4bits / quantize_matmul_8bits
// (MLAS' BlockwiseQuantizer<T, block, bits, columnwise>::quantizeAndTranspose
// in onnxruntime/core/mlas/lib/q4_dq.cpp), asymmetric, with zero points:
//
//   per column n of the [K, N] weight, per block of `block` rows along K
//   (the last block may be partial: it covers only the rows there are):
//     min = min(block min, 0), max = max(block max, 0)
//     scale = (max - min) / (2^bits - 1)           stored in the weight's type
//     zp    = clamp(roundf(-min / scale), 0, 2^bits - 1)   (0 when scale is 0)
//     q     = clamp(roundf(w * (1 / stored scale) + zp), 0, 2^bits - 1)
//   and back: w' = (q - zp) * stored scale.
//
// Every step in float32, as the C++ does (Math.fround after each operation:
// one double operation on float32 operands rounded once to float32 is the
// float32 operation), roundf rounding halves away from zero.
//
// Layout (the operator's inputs B, scales, zero_points):
//   packed      [N, kBlocks, blob]  blob = block * bits / 8 bytes; 4 bits: element k in byte k>>1,
//                                   low nibble first; a partial block's tail stays 0
//   scales      [N, kBlocks]
//   zero points [N, ceil(kBlocks * bits / 8)]  4 bits: block b in byte b>>1, low nibble first;
//                                   an odd kBlocks' last high nibble is 8 (MLAS' default fill)
import { fromHalfBits, toHalfBits } from '../../workers/engine/model/float16.ts';

export type Bits = 4 | 8;

export interface BlockwiseShape {
  K: number;
  N: number;
  bits: Bits;
  block: number;
}

export interface BlockwiseQuantized extends BlockwiseShape {
  kBlocks: number;
  blobSize: number;
  /** Zero-point bytes per column. */
  zpCols: number;
  packed: Uint8Array;
  /** The scales as stored, as float32 values (fp16-rounded when `half`). */
  scales: Float32Array;
  /** fp16 bits of the scales when the weight is fp16. */
  scaleBits?: Uint16Array;
  zeroPoints: Uint8Array;
}

export const kBlocksOf = (K: number, block: number) => Math.ceil(K / block);
export const blobSizeOf = (block: number, bits: Bits) => (block * bits) / 8;
export const zpColsOf = (kBlocks: number, bits: Bits) => Math.ceil((kBlocks * bits) / 8);

const FLT_MAX = 3.4028234663852886e38;
const f = Math.fround;
/** C's roundf: to nearest, halves away from zero. */
const roundf = (x: number) => (x >= 0 ? Math.floor(x + 0.5) : -Math.floor(-x + 0.5));

/**
 * Quantizes a [K, N] row-major weight (float32 values; `half` when it came from fp16, so the
 * scales are kept as fp16 the way onnxruntime stores them for a float16 A).
 */
export function quantizeBlockwise(w: Float32Array, { K, N, bits, block }: BlockwiseShape, half = false): BlockwiseQuantized {
  if (w.length !== K * N) throw new Error(`weight of ${w.length} values where K ${K} x N ${N} were expected`);
  const kMax = (1 << bits) - 1;
  const kBlocks = kBlocksOf(K, block);
  const blobSize = blobSizeOf(block, bits);
  const qRows = kBlocks * blobSize; // bytes per column
  const zpCols = zpColsOf(kBlocks, bits);
  const packed = new Uint8Array(N * qRows);
  const scales = new Float32Array(N * kBlocks);
  const scaleBits = half ? new Uint16Array(N * kBlocks) : undefined;
  const zeroPoints = new Uint8Array(N * zpCols).fill(bits === 4 ? 0x88 : 0);
  const mins = new Float32Array(N);
  const maxs = new Float32Array(N);
  const zps = new Uint8Array(N);
  const recips = new Float32Array(N);
  for (let b = 0; b < kBlocks; b++) {
    const r0 = b * block;
    const r1 = Math.min(r0 + block, K);
    mins.fill(FLT_MAX);
    maxs.fill(-FLT_MAX);
    for (let k = r0; k < r1; k++) {
      const row = k * N;
      for (let n = 0; n < N; n++) {
        const v = w[row + n];
        if (v < mins[n]) mins[n] = v;
        if (v > maxs[n]) maxs[n] = v;
      }
    }
    for (let n = 0; n < N; n++) {
      // range2scalezp<T, bits, signed = false>
      const min = Math.min(mins[n], 0);
      const max = Math.max(maxs[n], 0);
      const scaleF = f(f(max - min) / kMax);
      let zpF = min;
      if (scaleF !== 0) zpF = -f(min / scaleF);
      const zp = zpF < 0 ? 0 : zpF > kMax ? kMax : roundf(zpF);
      let stored = scaleF;
      if (scaleBits) {
        scaleBits[n * kBlocks + b] = toHalfBits(scaleF);
        stored = fromHalfBits(scaleBits[n * kBlocks + b]);
      }
      scales[n * kBlocks + b] = stored;
      zps[n] = zp;
      recips[n] = stored ? f(1 / stored) : 0;
      if (bits === 8) zeroPoints[n * zpCols + b] = zp;
      else {
        const at = n * zpCols + (b >> 1);
        const shift = (b & 1) * 4;
        zeroPoints[at] = (zeroPoints[at] & ~(0xf << shift)) | (zp << shift);
      }
    }
    for (let k = r0; k < r1; k++) {
      const row = k * N;
      for (let n = 0; n < N; n++) {
        const x = roundf(f(f(w[row + n] * recips[n]) + zps[n]));
        const q = x < 0 ? 0 : x > kMax ? kMax : x;
        if (bits === 8) packed[n * qRows + k] = q;
        else packed[n * qRows + (k >> 1)] |= q << ((k & 1) * 4);
      }
    }
  }
  return { K, N, bits, block, kBlocks, blobSize, zpCols, packed, scales, scaleBits, zeroPoints };
}

/** The quantized element (k, n). */
export function quantizedAt(q: Pick<BlockwiseQuantized, 'packed' | 'bits' | 'kBlocks' | 'blobSize'>, k: number, n: number): number {
  const at = n * q.kBlocks * q.blobSize;
  return q.bits === 8 ? q.packed[at + k] : (q.packed[at + (k >> 1)] >> ((k & 1) * 4)) & 0xf;
}

/** The zero point of block b of column n. */
export function zeroPointAt(q: Pick<BlockwiseQuantized, 'zeroPoints' | 'bits' | 'zpCols'>, b: number, n: number): number {
  return q.bits === 8 ? q.zeroPoints[n * q.zpCols + b] : (q.zeroPoints[n * q.zpCols + (b >> 1)] >> ((b & 1) * 4)) & 0xf;
}

/** The [K, N] row-major weight MatMulNBits computes with: (q - zp) * scale. */
export function dequantizeBlockwise(q: Pick<BlockwiseQuantized, 'K' | 'N' | 'block' | 'bits' | 'kBlocks' | 'blobSize' | 'zpCols' | 'packed' | 'scales' | 'zeroPoints'>): Float32Array {
  const out = new Float32Array(q.K * q.N);
  for (let n = 0; n < q.N; n++) {
    for (let k = 0; k < q.K; k++) {
      const b = Math.floor(k / q.block);
      out[k * q.N + n] = f((quantizedAt(q, k, n) - zeroPointAt(q, b, n)) * q.scales[n * q.kBlocks + b]);
    }
  }
  return out;
}

/** A [rows, cols] row-major matrix transposed (Gemm's transB weights are [N, K]). */
export function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c];
  return out;
}
