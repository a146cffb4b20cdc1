// the engine's one formatter: the UI and the engine's messages show the same numbers
export { formatBytes } from '../../workers/engine/errors.ts';

/** Error text and field from an error that crossed the worker boundary. */
export function describeError(e: unknown): { message: string; field?: string; code?: string } {
  const err = e as { message?: string; field?: string; code?: string };
  return { message: err?.message ?? String(e), field: err?.field, code: err?.code };
}
