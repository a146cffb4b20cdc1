// Engine messages as the page shows them: no request ids (a person cannot
// use one), models by name. The engine's own errors already read this way
// (errors.ts); this also covers messages built elsewhere around an id.
import { modelName } from '../../workers/engine/model-name.ts';

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const LEADING_ID = new RegExp(`^request ${UUID}:\\s*`, 'i');
const ANY_ID = new RegExp(`\\b(request )?${UUID}\\b`, 'gi');
/** A folder URL (a model's root; a file's URL stays as it is, it names the file). */
const FOLDER_URL = /\bhttps?:\/\/[^\s,;)]+\/(?=[\s,;)]|$)/g;

export function plainMessage(text: string): string {
  return text
    .replace(LEADING_ID, '')
    .replace(ANY_ID, (_, request: string | undefined) => (request ? 'this request' : 'it'))
    .replace(FOLDER_URL, (url) => modelName(url));
}

export { modelName };
