// Planning a graph that carries its weights inline, of any size: the file is
// read as a stream and rewritten into a skeleton, the same ModelProto without
// its large tensor payloads (TensorProto raw_data and the typed *_data
// fields). The payloads are skipped by their length as they stream past,
// never buffered, so an 822 MB transformer costs a few MB of memory. The
// skeleton keeps every node, every initializer's name, type and dims, small
// constants and the graph's inputs and outputs: what graph-info.ts and the
// attention finder read. It is never handed to onnxruntime.
import { WIRE, Writer } from './protobuf.ts';
import { GRAPH, MODEL, NODE, TENSOR } from './graph-info.ts';

/** Tensor payloads up to this size stay in the skeleton (scalars and shapes that rewrites read). */
const KEEP_PAYLOAD_BYTES = 4096;
/** TensorProto fields holding element data: float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data. */
const PAYLOAD_FIELDS = new Set([4, 5, 6, 7, TENSOR.rawData, 10, 11]);

/** Pulls bytes from a chunk stream: small reads are buffered, skips drop whole chunks without copying them. */
class ChunkReader {
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private ended = false;
  /** Bytes consumed from the start of the stream. */
  consumed = 0;

  constructor(private readonly chunks: AsyncIterator<Uint8Array>) {}

  private get available() {
    return this.buf.length - this.pos;
  }

  /** Makes at least n bytes available; false when the stream ends first. */
  private async fill(n: number): Promise<boolean> {
    while (this.available < n) {
      if (this.ended) return false;
      const next = await this.chunks.next();
      if (next.done) {
        this.ended = true;
        continue;
      }
      const rest = this.buf.subarray(this.pos);
      const merged = new Uint8Array(rest.length + next.value.length);
      merged.set(rest);
      merged.set(next.value, rest.length);
      this.buf = merged;
      this.pos = 0;
    }
    return true;
  }

  /** A varint's bytes as they are, or null at the end of the stream (only between fields). */
  async varintBytes(): Promise<Uint8Array | null> {
    if (!(await this.fill(1))) return null;
    let n = 0;
    for (;;) {
      if (!(await this.fill(n + 1))) throw new Error('truncated varint');
      if (!(this.buf[this.pos + n++] & 0x80)) return this.bytes(n);
    }
  }

  async varint(): Promise<number | null> {
    const b = await this.varintBytes();
    return b === null ? null : decodeVarint(b);
  }

  async bytes(n: number): Promise<Uint8Array> {
    if (!(await this.fill(n))) throw new Error(`truncated field: wanted ${n} bytes at byte ${this.consumed}`);
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    this.consumed += n;
    return out;
  }

  async skip(n: number): Promise<void> {
    let left = n;
    const here = Math.min(left, this.available);
    this.pos += here;
    left -= here;
    while (left > 0) {
      const next = await this.chunks.next();
      if (next.done) throw new Error(`truncated field: ${left} of ${n} bytes missing at the end of the file`);
      if (next.value.length <= left) {
        left -= next.value.length;
        continue;
      }
      this.buf = next.value;
      this.pos = left;
      left = 0;
    }
    this.consumed += n;
  }
}

function decodeVarint(b: Uint8Array): number {
  let result = 0;
  let mul = 1;
  for (const byte of b) {
    result += (byte & 0x7f) * mul; // arithmetic: values may pass 2^31
    mul *= 128;
  }
  return result;
}

interface Key {
  field: number;
  wire: number;
  bytes: Uint8Array;
}

async function readKey(r: ChunkReader): Promise<Key | null> {
  const bytes = await r.varintBytes();
  if (!bytes) return null;
  const key = decodeVarint(bytes);
  return { field: Math.floor(key / 8), wire: key & 7, bytes };
}

/** Copies a non-LEN field into w byte for byte. */
async function copyScalar(r: ChunkReader, w: Writer, k: Key): Promise<void> {
  w.raw(k.bytes);
  if (k.wire === WIRE.VARINT) w.raw((await r.varintBytes())!);
  else if (k.wire === WIRE.I64 || k.wire === WIRE.I32) w.raw(await r.bytes(k.wire === WIRE.I64 ? 8 : 4));
  else throw new Error(`unsupported wire type ${k.wire}`);
}

/**
 * A message copied field by field: scalars byte for byte, and each LEN field handed to `lenField`,
 * which reads its `len` bytes (or skips them) and writes what it keeps into `w`.
 */
async function copyMessage(r: ChunkReader, end: number, lenField: (w: Writer, field: number, len: number) => Promise<void>): Promise<Writer> {
  const w = new Writer();
  while (r.consumed < end) {
    const k = (await readKey(r))!;
    if (k.wire !== WIRE.LEN) await copyScalar(r, w, k);
    else await lenField(w, k.field, (await r.varint())!);
  }
  return w;
}

/** A TensorProto with its large payloads left out. */
function tensorSkeleton(r: ChunkReader, end: number): Promise<Writer> {
  return copyMessage(r, end, async (w, field, len) => {
    if (PAYLOAD_FIELDS.has(field) && len > KEEP_PAYLOAD_BYTES) await r.skip(len);
    else w.bytes(field, await r.bytes(len));
  });
}

/** Nodes up to this size are copied whole; larger ones (a Constant holding a folded buffer) lose their tensor payloads. */
const KEEP_NODE_BYTES = 64 * 1024;

/** A NodeProto or AttributeProto whose tensor attributes (AttributeProto.t = 5, .tensors = 11) lose their large payloads. */
function nodeSkeleton(r: ChunkReader, end: number, tensorFields: Set<number>, nested: (field: number) => boolean): Promise<Writer> {
  return copyMessage(r, end, async (w, field, len) => {
    if (tensorFields.has(field)) w.message(field, await tensorSkeleton(r, r.consumed + len));
    else if (nested(field)) w.message(field, await nodeSkeleton(r, r.consumed + len, new Set([5, 11]), () => false));
    else w.bytes(field, await r.bytes(len));
  });
}

/** A GraphProto with its initializers' payloads left out; nodes, inputs and outputs copied whole. */
function graphSkeleton(r: ChunkReader, end: number): Promise<Writer> {
  return copyMessage(r, end, async (w, field, len) => {
    if (field === GRAPH.initializer) w.message(field, await tensorSkeleton(r, r.consumed + len));
    else if (field === GRAPH.node && len > KEEP_NODE_BYTES) w.message(field, await nodeSkeleton(r, r.consumed + len, new Set(), (f) => f === NODE.attribute));
    else w.bytes(field, await r.bytes(len));
  });
}

/** The skeleton of a serialized ModelProto read from a stream of its bytes. */
export async function graphSkeletonFromStream(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const iterator = chunks[Symbol.asyncIterator]();
  const r = new ChunkReader(iterator);
  const w = new Writer();
  let graphs = 0;
  try {
    for (;;) {
      const k = await readKey(r);
      if (!k) break;
      if (k.wire !== WIRE.LEN) {
        await copyScalar(r, w, k);
        continue;
      }
      const len = (await r.varint())!;
      if (k.field === MODEL.graph) {
        graphs++;
        w.message(k.field, await graphSkeleton(r, r.consumed + len));
      } else w.bytes(k.field, await r.bytes(len));
    }
  } finally {
    await iterator.return?.();
  }
  if (!graphs) throw new Error('no graph in this file (not an ONNX model)');
  return w.finish();
}

/** A Blob's bytes as an async iterable (ReadableStream async iteration is not everywhere yet). */
export async function* blobChunks(blob: Blob): AsyncIterable<Uint8Array> {
  const reader = blob.stream().getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}
