// A model's files name other files: an ONNX graph names its external data by a
// `location` relative to the graph's folder. Such a name comes from whoever made
// the model, so it is kept inside the model's folder: no absolute path, no `..`
// (also as the URL parser reads it: `%2e%2e`, or `\` as a separator), whatever
// the source (a folder on disk, a picked folder, a URL, the Hub).
import { ModelLoadError } from '../errors.ts';

/** True when `name` is a relative path that stays inside the folder it is relative to. */
export function staysInFolder(name: string): boolean {
  if (!name || /^[/\\]/.test(name) || /^[a-z][a-z0-9+.-]*:/i.test(name)) return false; // absolute, a drive letter or a scheme
  return !name.split(/[/\\]/).some((segment) => /^(\.|%2e){2}$/i.test(segment));
}

/** Refuses an external-data location that leaves the graph's folder, naming the graph and the location. */
export function checkExternalLocation(graphPath: string, location: string): void {
  if (!staysInFolder(location)) throw new ModelLoadError(graphPath, `its external data location "${location}" is outside the model folder; refused, nothing outside it is read`);
}
