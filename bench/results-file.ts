// bench/results.json holds every benchmark's figures under its own key; a run
// replaces its key and keeps the others.
import { readFileSync, writeFileSync } from 'node:fs';

export function readResults(out: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
  } catch {
    return {}; // first run
  }
}

export function writeResults(out: string, key: string, figures: unknown): void {
  writeFileSync(out, `${JSON.stringify({ ...readResults(out), [key]: figures }, null, 2)}\n`);
  console.log(`wrote ${key} figures to ${out}`);
}
