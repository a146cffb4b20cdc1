// A model's name for people: model ids are whatever the source was (a URL,
// a folder, a Hub repo), and messages name the model, not its address.

/** "tiny-sd3" for http://host/models/tiny-sd3/, "owner/repo" for a Hub URL or id; other ids as they are. */
export function modelName(id: string): string {
  let url: URL;
  try {
    url = new URL(id);
  } catch {
    return id;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return id;
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  // a Hub file URL: owner/repo/resolve/<revision>/[subfolder]
  const resolve = parts.indexOf('resolve');
  if (resolve === 2) return parts.slice(0, 2).join('/') + (parts.length > 4 ? `/${parts.slice(4).join('/')}` : '');
  return parts.at(-1) ?? url.host;
}
