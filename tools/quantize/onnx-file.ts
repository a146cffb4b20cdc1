// An ONNX graph file read in place and written in pieces, so a graph of any
// size (weights inline, up to protobuf's 2 GB) costs a few MB: fields are
// walked by positional reads (workers/engine/model/protobuf.ts decodes the
// varints from a small window), small messages (nodes, tensor headers) are read
// and parsed with that module's Reader, and large payloads are never read:
// they are named by their range in the file and copied through in chunks when
// the output is written. The output is a list of parts, bytes or file ranges,
// whose lengths are known before anything is written, so a message's length
// prefix is written ahead of content that is still on disk.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { Reader, WIRE, type Field } from '../../workers/engine/model/protobuf.ts';

/** A field of a message in a file: protobuf.ts' Field, its positions offsets in the file. */
export type FileField = Field;

const WINDOW = 1 << 20;

/** A file opened for positional reads, with a read-ahead window for the many small reads of a field walk. */
export class InputFile {
  readonly fd: number;
  readonly size: number;
  private win: Uint8Array = new Uint8Array(0);
  private winStart = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    this.size = fstatSync(this.fd).size;
  }

  /** Bytes [pos, pos + n), or fewer at the end of the file: a view, valid until the next call. */
  view(pos: number, n: number): Uint8Array {
    if (pos >= this.winStart && pos + n <= this.winStart + this.win.length) return this.win.subarray(pos - this.winStart, pos - this.winStart + n);
    const len = Math.min(Math.max(n, WINDOW), this.size - pos);
    this.win = this.read(pos, Math.max(0, len));
    this.winStart = pos;
    return this.win.subarray(0, Math.min(n, this.win.length));
  }

  /** Bytes [pos, pos + n) in a buffer of their own. */
  read(pos: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const got = readSync(this.fd, out, done, n - done, pos + done);
      if (got === 0) throw new Error(`${this.path}: truncated: wanted ${n} bytes at ${pos}, the file has ${this.size}`);
      done += got;
    }
    return out;
  }

  range(start: number, end: number): FileRange {
    return { file: this, offset: start, length: end - start };
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Calls `onField` for each field of the message at [start, end) of the file, in order; LEN payloads are not read. */
export function walkFields(file: InputFile, start: number, end: number, onField: (f: FileField) => void): void {
  let pos = start;
  while (pos < end) {
    // a key and a length are 20 bytes at most
    const head = file.view(pos, Math.min(20, end - pos));
    const r = new Reader(head, 0, head.length);
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    let value = 0;
    let dataStart = 0;
    let dataEnd = 0;
    let next: number;
    if (wire === WIRE.VARINT) {
      value = r.varint();
      next = pos + r.pos;
    } else if (wire === WIRE.LEN) {
      value = r.varint();
      dataStart = pos + r.pos;
      dataEnd = dataStart + value;
      next = dataEnd;
    } else if (wire === WIRE.I64) next = pos + r.pos + 8;
    else if (wire === WIRE.I32) next = pos + r.pos + 4;
    else throw new Error(`${file.path}: unsupported wire type ${wire} at byte ${pos} (not an ONNX model?)`);
    if (next > end) throw new Error(`${file.path}: truncated field at byte ${pos}`);
    onField({ field, wire, value, start: pos, end: next, dataStart, dataEnd });
    pos = next;
  }
}

export interface FileRange {
  file: InputFile;
  offset: number;
  length: number;
}

export type Part = Uint8Array | FileRange;

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Uint8Array.from(out);
}

/** A message (or a run of fields) as parts, with its length. */
export class Parts {
  readonly items: Part[] = [];
  length = 0;

  add(p: Part): this {
    if (!p.length) return this;
    this.items.push(p);
    this.length += p.length;
    return this;
  }

  append(other: Parts): this {
    for (const p of other.items) this.add(p);
    return this;
  }

  /** A LEN field whose payload is `body`. */
  field(field: number, body: Parts): this {
    this.add(varint(field * 8 + WIRE.LEN)).add(varint(body.length));
    for (const p of body.items) this.add(p);
    return this;
  }
}

const COPY_CHUNK = 8 << 20;

/** Where parts are written: sequential writes at a position, file ranges copied through in chunks. */
export class OutputFile {
  private fd: number;
  pos = 0;
  private chunk: Uint8Array | null = null;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
  }

  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, this.pos + done);
    this.pos += bytes.byteLength;
  }

  copy(r: FileRange): void {
    this.chunk ??= new Uint8Array(COPY_CHUNK);
    for (let at = 0; at < r.length; at += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, r.length - at);
      let got = 0;
      while (got < n) {
        const k = readSync(r.file.fd, this.chunk, got, n - got, r.offset + at + got);
        if (k === 0) throw new Error(`${r.file.path}: truncated: wanted ${r.length} bytes at ${r.offset}`);
        got += k;
      }
      this.write(this.chunk.subarray(0, n));
    }
  }

  writeParts(parts: Parts): void {
    for (const p of parts.items) {
      if (p instanceof Uint8Array) this.write(p);
      else this.copy(p);
    }
  }

  /** Zero bytes (alignment). */
  pad(n: number): void {
    if (n > 0) this.write(new Uint8Array(n));
  }

  close(): void {
    closeSync(this.fd);
  }
}
