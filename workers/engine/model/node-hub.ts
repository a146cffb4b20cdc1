// The Hub settings huggingface_hub reads, for Node entry points: HF_ENDPOINT
// (a mirror) and the token from HF_TOKEN, else the file `huggingface-cli login`
// writes (HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ModelSourceSpec } from '../api/types.ts';
import type { HubAccess } from './model-files.ts';

export function nodeHubToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.HF_TOKEN?.trim()) return env.HF_TOKEN.trim();
  const file = env.HF_TOKEN_PATH ?? join(env.HF_HOME ?? join(homedir(), '.cache', 'huggingface'), 'token');
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A Hub source with HF_ENDPOINT as its host when it names none, and the access to load it with (a given token wins over the environment's). */
export function withNodeHubDefaults(spec: ModelSourceSpec, access: HubAccess = {}, env: NodeJS.ProcessEnv = process.env): { spec: ModelSourceSpec; access: HubAccess } {
  if (spec.kind !== 'hub') return { spec, access };
  const host = spec.host ?? (env.HF_ENDPOINT?.trim() || undefined);
  const token = access.token ?? nodeHubToken(env);
  return { spec: host ? { ...spec, host } : spec, access: token ? { ...access, token } : access };
}
