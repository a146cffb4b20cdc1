// The little of protobuf's wire format that reading and rewriting ONNX graphs
// needs. Fields are visited as byte ranges, never decoded into objects, so a
// graph's weights are skipped (inspection) or copied as raw bytes (rewrites).

export const WIRE = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

export interface Field {
  field: number;
  wire: number;
  /** VARINT: the value; LEN: the payload's length. */
  value: number;
  /** The whole field (key included) in the buffer: what a rewrite copies unchanged. */
  start: number;
  end: number;
  /** LEN: the payload's range. */
  dataStart: number;
  dataEnd: number;
}

export class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * mul; // arithmetic, not bit ops: values may pass 2^31
      if (!(b & 0x80)) return result;
      mul *= 128;
    }
  }

  /** Calls `onField` for each field in order. */
  fields(onField: (f: Field) => void): void {
    while (this.pos < this.end) {
      const start = this.pos;
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      let value = 0;
      let dataStart = 0;
      let dataEnd = 0;
      if (wire === WIRE.VARINT) value = this.varint();
      else if (wire === WIRE.LEN) {
        value = this.varint();
        dataStart = this.pos;
        this.pos += value;
        dataEnd = this.pos;
        if (this.pos > this.end) throw new Error('truncated field');
      } else if (wire === WIRE.I64) this.pos += 8;
      else if (wire === WIRE.I32) this.pos += 4;
      else throw new Error(`unsupported wire type ${wire}`);
      onField({ field, wire, value, start, end: this.pos, dataStart, dataEnd });
    }
  }
}

/** Every field of a message, in order. */
export function readFields(buf: Uint8Array, start = 0, end = buf.length): Field[] {
  const out: Field[] = [];
  new Reader(buf, start, end).fields((f) => out.push(f));
  return out;
}

const utf8 = new TextDecoder();
const utf8Encode = new TextEncoder();

export const readString = (buf: Uint8Array, f: Field) => utf8.decode(buf.subarray(f.dataStart, f.dataEnd));

/** A VARINT field's value as a signed int64 (negative attributes such as axis -1 take ten bytes). */
export function readInt64(buf: Uint8Array, f: Field): number {
  let pos = f.start;
  while (buf[pos] & 0x80) pos++; // skip the key
  pos++;
  let v = 0n;
  let shift = 0n;
  for (;;) {
    const b = buf[pos++];
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
    shift += 7n;
  }
  return Number(BigInt.asIntN(64, v));
}

/** A message under construction: fields appended in order, raw parts copied as they are. */
export class Writer {
  private parts: Uint8Array[] = [];
  private pending: number[] = [];
  length = 0;

  private flush(): void {
    if (!this.pending.length) return;
    this.parts.push(Uint8Array.from(this.pending));
    this.pending = [];
  }

  private varint(v: number): void {
    // two's complement for negatives, as protobuf encodes int64
    let n = v < 0 ? BigInt.asUintN(64, BigInt(v)) : BigInt(v);
    do {
      let byte = Number(n & 0x7fn);
      n >>= 7n;
      if (n) byte |= 0x80;
      this.pending.push(byte);
      this.length++;
    } while (n);
  }

  private key(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  int(field: number, v: number): this {
    this.key(field, WIRE.VARINT);
    this.varint(v);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.key(field, WIRE.LEN);
    this.varint(data.byteLength);
    this.raw(data);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, utf8Encode.encode(s));
  }

  message(field: number, m: Writer): this {
    this.key(field, WIRE.LEN);
    this.varint(m.length);
    this.flush();
    this.parts.push(...m.finishParts());
    this.length += m.length;
    return this;
  }

  /** Bytes copied as they are (a field read elsewhere, key included). */
  raw(data: Uint8Array): this {
    this.flush();
    this.parts.push(data);
    this.length += data.byteLength;
    return this;
  }

  private finishParts(): Uint8Array[] {
    this.flush();
    return this.parts;
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.finishParts()) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}
