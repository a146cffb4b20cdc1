// A macrotask turn without setTimeout's clamping (1 ms in Node, 4 ms nested in
// browsers): lets messages, cancellations and settled promises of earlier
// tasks in before the caller goes on.
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => void };
  if (g.setImmediate) return new Promise((r) => g.setImmediate!(r));
  return new Promise((r) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      r();
    };
    ch.port2.postMessage(null);
  });
}
