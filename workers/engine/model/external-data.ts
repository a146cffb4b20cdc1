// Points a graph's external data at other file names. The Node download cache
// stores each file under the hash of its URL, not under the name the graph
// records (`model.onnx_data`); native onnxruntime reads external data by name
// from one folder, so a cached graph is handed over with its locations renamed
// to the cache's names and that folder. Only the location entries change;
// every other byte is copied as it is.
import { GRAPH, graphField, MODEL, TENSOR } from './graph-info.ts';
import { Reader, readString, WIRE, Writer } from './protobuf.ts';

/** StringStringEntryProto's fields. */
const ENTRY = { key: 1, value: 2 } as const;

/** The model with each initializer's external `location` renamed by `names` (locations not in it stay). */
export function relocateExternalData(model: Uint8Array, names: ReadonlyMap<string, string>): Uint8Array {
  const g = graphField(model);
  const out = new Writer();
  new Reader(model).fields((f) => {
    if (f.start !== g.start) return void out.raw(model.subarray(f.start, f.end));
    const graph = new Writer();
    new Reader(model, f.dataStart, f.dataEnd).fields((gf) => {
      if (gf.field !== GRAPH.initializer || gf.wire !== WIRE.LEN) return void graph.raw(model.subarray(gf.start, gf.end));
      const tensor = new Writer();
      new Reader(model, gf.dataStart, gf.dataEnd).fields((tf) => {
        if (tf.field !== TENSOR.externalData || tf.wire !== WIRE.LEN) return void tensor.raw(model.subarray(tf.start, tf.end));
        let key = '';
        let value = '';
        new Reader(model, tf.dataStart, tf.dataEnd).fields((e) => {
          if (e.field === ENTRY.key) key = readString(model, e);
          else if (e.field === ENTRY.value) value = readString(model, e);
        });
        const renamed = key === 'location' ? names.get(value) : undefined;
        if (renamed === undefined) return void tensor.raw(model.subarray(tf.start, tf.end));
        tensor.message(TENSOR.externalData, new Writer().string(ENTRY.key, key).string(ENTRY.value, renamed));
      });
      graph.message(GRAPH.initializer, tensor);
    });
    out.message(MODEL.graph, graph);
  });
  return out.finish();
}
