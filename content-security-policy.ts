// The app's Content-Security-Policy, in one place: sent as a response header by
// the dev and preview servers (vite.config.ts), injected as a <meta> into the
// HTML, written into the build's `_headers`, and quoted in the README.
// No inline or remote script (WebAssembly may compile), workers only from the
// app, and fetches only to the app, the Hugging Face Hub and its CDNs, and local
// servers (a model folder served on this machine, the tests' model servers).
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self' blob:",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' blob: data:",
  "connect-src 'self' https://huggingface.co https://*.huggingface.co https://*.hf.co http://localhost:* http://127.0.0.1:*",
  "object-src 'none'",
  "base-uri 'self'",
].join('; ');
