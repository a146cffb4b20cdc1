// A small ONNX graph builder: just enough to write the tiny SD3 components.
// Weights are seeded by parameter name, so every build writes the same bytes.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Dim = number | string;

export const DType = { float: 1, int32: 6, int64: 7 } as const;
export type DTypeCode = (typeof DType)[keyof typeof DType];

export const OPSET = 17;

/** FNV-1a over the parameter name: the seed of that parameter's weights. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** mulberry32 + Box-Muller: deterministic, platform-independent weight noise. */
function seededNormals(seed: number, n: number): Float32Array {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const theta = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

type AttrValue = number | number[] | string | { floats: number[] } | { float: number };

interface Initializer {
  name: string;
  dims: number[];
  dataType: DTypeCode;
  bytes: Uint8Array;
}

export interface SerializeOptions {
  /** Write initializers larger than this many bytes to an external data file. */
  externalDataFile?: string;
  externalThreshold?: number;
}

export class Graph {
  private nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private inits: Initializer[] = [];
  private initNames = new Set<string>();
  private inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();

  constructor(readonly name: string) {}

  input(name: string, dtype: DTypeCode, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  /** Marks `value` as a graph output called `name` (through Identity when the names differ). */
  output(value: string, name: string, dtype: DTypeCode, dims: Dim[]): string {
    if (value !== name) this.op('Identity', [value], {}, name);
    this.outputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  moveOutputsFirst(names: string[]): void {
    const first = names.map((n) => this.outputs.find((o) => o.name === n)!);
    this.outputs = [...first, ...this.outputs.filter((o) => !names.includes(o.name))];
  }

  private addInit(name: string, dims: number[], dataType: DTypeCode, bytes: Uint8Array) {
    if (this.initNames.has(name)) throw new Error(`duplicate initializer ${name}`);
    this.initNames.add(name);
    this.inits.push({ name, dims, dataType, bytes });
    return name;
  }

  /** A trainable-looking weight: N(0, scale^2), seeded by its name. */
  weight(name: string, dims: number[], scale: number): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = seededNormals(hashName(`${this.name}/${name}`), n);
    for (let i = 0; i < n; i++) data[i] *= scale;
    return this.addInit(name, dims, DType.float, new Uint8Array(data.buffer));
  }

  /** A named float tensor with given contents (constant tables, norm weights). */
  tensor(name: string, dims: number[], data: Float32Array): string {
    return this.addInit(name, dims, DType.float, new Uint8Array(data.slice().buffer));
  }

  fill(name: string, dims: number[], value: number): string {
    return this.tensor(name, dims, new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(value));
  }

  /** Shared int64 constant (shapes, axes, indices). */
  ints(values: number[], scalar = false): string {
    const key = `i64:${scalar}:${values.join(',')}`;
    let name = this.constCache.get(key);
    if (!name) {
      const data = new BigInt64Array(values.map((v) => BigInt(v)));
      name = this.addInit(`const_${this.constCache.size}_i64`, scalar ? [] : [values.length], DType.int64, new Uint8Array(data.buffer));
      this.constCache.set(key, name);
    }
    return name;
  }

  int32s(values: number[], scalar = false): string {
    const key = `i32:${scalar}:${values.join(',')}`;
    let name = this.constCache.get(key);
    if (!name) {
      const data = new Int32Array(values);
      name = this.addInit(`const_${this.constCache.size}_i32`, scalar ? [] : [values.length], DType.int32, new Uint8Array(data.buffer));
      this.constCache.set(key, name);
    }
    return name;
  }

  /** Shared float constant (scalars broadcast). */
  floats(values: number[], dims?: number[]): string {
    const key = `f32:${dims?.join('x') ?? 's'}:${values.join(',')}`;
    let name = this.constCache.get(key);
    if (!name) {
      name = this.addInit(`const_${this.constCache.size}_f32`, dims ?? (values.length === 1 ? [] : [values.length]), DType.float, new Uint8Array(new Float32Array(values).buffer));
      this.constCache.set(key, name);
    }
    return name;
  }

  /** Adds a node; returns its single output name. */
  op(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outName?: string): string {
    return this.opN(type, inputs, 1, attrs, outName ? [outName] : undefined)[0];
  }

  opN(type: string, inputs: string[], nOut: number, attrs: Record<string, AttrValue> = {}, outNames?: string[]): string[] {
    const id = this.counter++;
    const outputs = outNames ?? Array.from({ length: nOut }, (_, i) => `${type.toLowerCase()}_${id}${nOut > 1 ? `_${i}` : ''}`);
    this.nodes.push(
      onnx.NodeProto.create({
        name: `${type}_${id}`,
        opType: type,
        input: inputs,
        output: outputs,
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return outputs;
  }

  serialize(opts: SerializeOptions = {}): { model: Uint8Array; externalData?: Uint8Array } {
    const threshold = opts.externalThreshold ?? 1024;
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const initializer = this.inits.map((t) => {
      if (opts.externalDataFile && t.bytes.byteLength >= threshold) {
        const proto = onnx.TensorProto.create({
          name: t.name,
          dims: t.dims,
          dataType: t.dataType,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: opts.externalDataFile },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(t.bytes.byteLength) },
          ],
        });
        chunks.push(t.bytes);
        offset += t.bytes.byteLength;
        // keep 64-byte alignment between tensors, like onnx's save_model does for large models
        const pad = (64 - (offset % 64)) % 64;
        if (pad) {
          chunks.push(new Uint8Array(pad));
          offset += pad;
        }
        return proto;
      }
      return onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: t.dataType, rawData: t.bytes });
    });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'sd3-webgpu tiny-model builder',
      opsetImport: [{ domain: '', version: OPSET }],
      graph: onnx.GraphProto.create({
        name: this.name,
        node: this.nodes,
        initializer,
        input: this.inputs,
        output: this.outputs,
      }),
    });
    const bytes = onnx.ModelProto.encode(model).finish();
    if (!opts.externalDataFile) return { model: bytes };
    const data = new Uint8Array(offset);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.byteLength;
    }
    return { model: bytes, externalData: data };
  }

  /** Bytes held by initializers: the model's weight size. */
  get weightBytes(): number {
    return this.inits.reduce((a, t) => a + t.bytes.byteLength, 0);
  }
}

function valueInfo(name: string, dtype: DTypeCode, dims: Dim[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: dtype,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

function attribute(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return onnx.AttributeProto.create({ name, type: T.INT, i: v });
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: v });
  if ('floats' in v) return onnx.AttributeProto.create({ name, type: T.FLOATS, floats: v.floats });
  return onnx.AttributeProto.create({ name, type: T.FLOAT, f: v.float });
}
