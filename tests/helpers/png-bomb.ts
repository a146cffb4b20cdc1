// A hostile PNG for the settings reader: a compressed iTXt chunk that inflates
// to gigabytes of zeros. Compressing 1.5 GB takes seconds, so the zlib stream is
// assembled instead: one byte-aligned deflate segment for 1 MiB of zeros (made
// with a zeroed window as its dictionary, so it is valid after any zeros),
// repeated, then an empty final block and the Adler-32 of the whole.
import { constants, deflateRawSync } from 'node:zlib';
import { encode as encodePng } from 'fast-png';
import encodeChunks from 'png-chunks-encode';
import extractChunks from 'png-chunks-extract';

const MIB = 1 << 20;

/** A zlib stream that inflates to `mib` MiB of zeros. */
export function zeroBomb(mib: number): Uint8Array {
  const zeros = Buffer.alloc(MIB);
  const sync = { level: 9, finishFlush: constants.Z_SYNC_FLUSH };
  const first = deflateRawSync(zeros, sync);
  const next = deflateRawSync(zeros, { ...sync, dictionary: Buffer.alloc(32 * 1024) });
  // fixed-Huffman final block holding only end-of-block: bits 1, 01, 0000000
  const finalBlock = [0x03, 0x00];
  // Adler-32 of n zeros: a = 1, b = n (mod 65521)
  const b = (mib * MIB) % 65521;
  const out = new Uint8Array(2 + first.length + (mib - 1) * next.length + finalBlock.length + 4);
  out.set([0x78, 0xda], 0);
  let at = 2;
  out.set(first, at);
  at += first.length;
  for (let i = 1; i < mib; i++, at += next.length) out.set(next, at);
  out.set(finalBlock, at);
  new DataView(out.buffer).setUint32(at + 2, (b << 16) | 1);
  return out;
}

/** A 2×2 PNG whose compressed iTXt chunk `keyword` holds `zlib`. */
export function pngWithCompressedITXt(keyword: string, zlib: Uint8Array): Uint8Array {
  const png = encodePng({ width: 2, height: 2, data: new Uint8Array(16).fill(90), channels: 4, depth: 8 });
  const kw = Uint8Array.from(keyword, (c) => c.charCodeAt(0));
  // keyword, 0, compressed 1, method 0 (zlib), no language (0), no translation (0), the data
  const data = new Uint8Array(kw.length + 5 + zlib.length);
  data.set(kw, 0);
  data.set([0, 1, 0, 0, 0], kw.length);
  data.set(zlib, kw.length + 5);
  const chunks = extractChunks(png);
  return encodeChunks([chunks[0], { name: 'iTXt', data }, ...chunks.slice(1)]);
}
