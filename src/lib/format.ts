export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${n} B`;
}

/** Error text and field from an error that crossed the worker boundary. */
export function describeError(e: unknown): { message: string; field?: string; code?: string } {
  const err = e as { message?: string; field?: string; code?: string };
  return { message: err?.message ?? String(e), field: err?.field, code: err?.code };
}
