// Finds the external-data files a graph refers to. ONNX records each tensor's
// file in a StringStringEntryProto {key: "location", value: <file>}; scanning for
// that entry's encoding avoids parsing the whole protobuf (graphs can be large).

const LOCATION_ENTRY = [0x0a, 0x08, ...new TextEncoder().encode('location'), 0x12];

/** Distinct `location` values in a serialized ModelProto, in order of first use. */
export function externalDataLocations(model: Uint8Array): string[] {
  const found: string[] = [];
  const decoder = new TextDecoder();
  outer: for (let i = 0; i + LOCATION_ENTRY.length < model.length; i++) {
    for (let j = 0; j < LOCATION_ENTRY.length; j++) if (model[i + j] !== LOCATION_ENTRY[j]) continue outer;
    let at = i + LOCATION_ENTRY.length;
    let len = 0;
    for (let shift = 0; at < model.length; shift += 7) {
      const b = model[at++];
      len |= (b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    const name = decoder.decode(model.subarray(at, at + len));
    if (!found.includes(name)) found.push(name);
    i = at + len - 1;
  }
  return found;
}
