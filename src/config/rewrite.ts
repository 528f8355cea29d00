import { readFileSync, realpathSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { removeAtomicWriteTempsSync, writeFileAtomicSync } from '../util/atomic-write.js';

/**
 * CONFIG REWRITE (Sentinel sends it after SLAVEOF): persists the upstream the relay follows now in its config file,
 * keeping every other line and comment. A config file that is a symlink (a mounted ConfigMap, a dotfiles link) is
 * rewritten at its target, so the link stays. Throws on any failure; the file is then unchanged.
 */
export function rewriteUpstream(configFile: string, host: string | null, port: number): void {
  const file = realpathSync(configFile);
  const doc = parseDocument(readFileSync(file, 'utf8'));
  doc.setIn(['upstream', 'host'], host);
  doc.setIn(['upstream', 'port'], port);
  writeFileAtomicSync(file, doc.toString());
}

/**
 * Removes the temp files of rewrites of `configFile` a crash interrupted (beside its target when it is a symlink, as
 * rewriteUpstream writes there). Never throws: what could not be removed is returned (`failed`), for the caller to log.
 */
export function removeRewriteTemps(configFile: string): ReturnType<typeof removeAtomicWriteTempsSync> {
  let file: string;
  try {
    file = realpathSync(configFile);
  } catch (err) {
    return { removed: [], failed: [{ name: configFile, err: err as Error }] };
  }
  return removeAtomicWriteTempsSync(file);
}
