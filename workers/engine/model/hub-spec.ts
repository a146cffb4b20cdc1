// Model sources as people type them: a URL, `hf:owner/repo[/subfolder][@revision]`
// (huggingface_hub's repo id, a folder inside the repo, a branch, tag or
// commit), or a folder. Shared by the CLI and the Node server; no Node imports.
import type { ModelSourceSpec } from '../api/types.ts';

/** `owner/repo[/subfolder][@revision]` as a Hub source; null when it is not one. */
export function parseHubSpec(text: string): Extract<ModelSourceSpec, { kind: 'hub' }> | null {
  const at = text.indexOf('@');
  const path = (at < 0 ? text : text.slice(0, at)).replace(/^\/+|\/+$/g, '');
  const revision = at < 0 ? undefined : text.slice(at + 1);
  const [owner, name, ...sub] = path.split('/');
  if (!owner || !name || !/^[\w.-]+$/.test(owner) || !/^[\w.-]+$/.test(name) || revision === '') return null;
  return { kind: 'hub', repo: `${owner}/${name}`, ...(sub.length ? { subfolder: sub.join('/') } : {}), ...(revision ? { revision } : {}) };
}

/** A source from a command-line argument: an http(s) URL, `hf:owner/repo[/subfolder][@revision]`, or a folder. */
export function parseModelArg(arg: string): ModelSourceSpec {
  if (/^https?:\/\//.test(arg)) return { kind: 'url', url: arg };
  if (arg.startsWith('hf:')) {
    const spec = parseHubSpec(arg.slice(3));
    if (!spec) throw new Error(`--model ${arg}: a Hub model reads hf:owner/repo, hf:owner/repo/subfolder or hf:owner/repo@revision`);
    return spec;
  }
  return { kind: 'path', path: arg };
}
