// What the loader needs to know about a serialized ONNX graph before handing
// it to onnxruntime: its weights' element types (fp16 needs `shader-f16`) and
// where external weights live (file, offset, length). A minimal protobuf walk
// over ModelProto -> GraphProto -> TensorProto: weight bytes are skipped by
// length, never copied, so it costs little even on a large inline graph.

/** TensorProto.DataType values the loader cares about. */
export const ONNX_DTYPE = { FLOAT: 1, FLOAT16: 10, BFLOAT16: 16 } as const;

export interface ExternalRef {
  location: string;
  offset: number;
  length: number;
}

export interface InitializerInfo {
  name: string;
  dataType: number;
  dims: number[];
  /** Present when the weights live in an external data file. */
  external?: ExternalRef;
}

const WIRE = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

class Reader {
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
  /** Calls `onField` for each field; LEN fields get a sub-range, others their value. */
  fields(onField: (field: number, wire: number, value: number, start: number, end: number) => void): void {
    while (this.pos < this.end) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      if (wire === WIRE.VARINT) onField(field, wire, this.varint(), 0, 0);
      else if (wire === WIRE.LEN) {
        const len = this.varint();
        const start = this.pos;
        this.pos += len;
        if (this.pos > this.end) throw new Error('truncated field');
        onField(field, wire, len, start, this.pos);
      } else if (wire === WIRE.I64) this.pos += 8;
      else if (wire === WIRE.I32) this.pos += 4;
      else throw new Error(`unsupported wire type ${wire}`);
    }
  }
}

const utf8 = new TextDecoder();

function tensorInfo(buf: Uint8Array, start: number, end: number): InitializerInfo {
  const info: InitializerInfo = { name: '', dataType: 0, dims: [] };
  const ext: Record<string, string> = {};
  new Reader(buf, start, end).fields((field, wire, value, s, e) => {
    if (field === 1 && wire === WIRE.VARINT) info.dims.push(value);
    else if (field === 1 && wire === WIRE.LEN) {
      const r = new Reader(buf, s, e);
      while (r.pos < e) info.dims.push(r.varint());
    } else if (field === 2) info.dataType = value;
    else if (field === 8) info.name = utf8.decode(buf.subarray(s, e));
    else if (field === 13) {
      let k = '';
      let v = '';
      new Reader(buf, s, e).fields((f, _w, _v, ss, ee) => {
        if (f === 1) k = utf8.decode(buf.subarray(ss, ee));
        else if (f === 2) v = utf8.decode(buf.subarray(ss, ee));
      });
      ext[k] = v;
    }
  });
  if (ext.location !== undefined) info.external = { location: ext.location, offset: Number(ext.offset ?? 0), length: Number(ext.length ?? 0) };
  return info;
}

/** Every initializer of the main graph, in order. Throws on a buffer that is not a ModelProto. */
export function graphInitializers(model: Uint8Array): InitializerInfo[] {
  const out: InitializerInfo[] = [];
  let sawGraph = false;
  new Reader(model).fields((field, wire, _v, s, e) => {
    if (field !== 7 || wire !== WIRE.LEN) return;
    sawGraph = true;
    new Reader(model, s, e).fields((gf, gw, _gv, gs, ge) => {
      if (gf === 5 && gw === WIRE.LEN) out.push(tensorInfo(model, gs, ge));
    });
  });
  if (!sawGraph) throw new Error('no graph in this file (not an ONNX model)');
  return out;
}

export interface GraphSummary {
  /** Distinct external data files the graph refers to, in order of first use. */
  externalLocations: string[];
  /** Whether any weight is stored in half precision (needs WebGPU's `shader-f16`). */
  halfPrecision: boolean;
}

/** What the loader checks before creating a session, from one walk over the graph. */
export function summarizeGraph(model: Uint8Array): GraphSummary {
  const inits = graphInitializers(model);
  return {
    externalLocations: [...new Set(inits.flatMap((t) => (t.external ? [t.external.location] : [])))],
    halfPrecision: inits.some((t) => t.dataType === ONNX_DTYPE.FLOAT16),
  };
}

export const hasHalfPrecisionWeights = (model: Uint8Array): boolean => summarizeGraph(model).halfPrecision;
