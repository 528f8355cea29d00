import { readFileSync, realpathSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { writeFileAtomicSync } from '../util/atomic-write.js';

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
