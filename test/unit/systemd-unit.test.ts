/**
 * deploy/systemd/psync-relay.service: its keys, read by a small parser (always), and systemd's own verdict,
 * `systemd-analyze verify` and `systemd-analyze security --offline` (when systemd-analyze is installed; .ci/run
 * installs it, and under CI its absence fails). Each test's name says which check it is.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { validateConfig } from '../../src/config/schema.js';
import { REPO_ROOT } from '../helpers/relay-process.js';

const run = promisify(execFile);
const UNIT_FILE = join(REPO_ROOT, 'deploy/systemd/psync-relay.service');
const text = readFileSync(UNIT_FILE, 'utf8');
const SYSTEMD_ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));

/** section -> key -> every value assigned (systemd keys may repeat; an empty assignment resets a list). */
function parseUnit(src: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const [i, raw] of src.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq <= 0) throw new Error(`line ${i + 1}: not a key=value in a section: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

const unit = parseUnit(text);
const service = unit.get('Service') ?? new Map<string, string[]>();
const value = (key: string): string | undefined => service.get(key)?.at(-1);

/** systemd time span: "30", "30s", "1min 30s", "500ms" -> seconds. */
function seconds(span: string): number {
  const units: Record<string, number> = { '': 1, s: 1, sec: 1, ms: 0.001, m: 60, min: 60, h: 3600 };
  let total = 0;
  for (const m of span.matchAll(/(\d+(?:\.\d+)?)\s*([a-z]*)/g)) {
    const f = units[m[2]!];
    if (f === undefined) throw new Error(`unknown time unit in ${span}`);
    total += Number(m[1]) * f;
  }
  return total;
}

t.test('parsed keys: type, start command, restart policy, stop timeout longer than shutdown-timeout', async (t) => {
  t.ok(['simple', 'notify'].includes(value('Type') ?? ''), `Type=${value('Type')}`);
  const exec = (value('ExecStart') ?? '').split(/\s+/);
  t.match(exec[0], /\/psync-relay$/, 'ExecStart runs the psync-relay command');
  t.equal(value('Restart'), 'on-failure');
  t.equal(value('RestartPreventExitStatus'), '2', 'a bad config (exit 2) is not restarted in a loop');
  const shutdownSeconds = validateConfig({}, null).shutdownTimeoutMs / 1000;
  const stop = seconds(value('TimeoutStopSec') ?? '0');
  t.ok(stop > shutdownSeconds, `TimeoutStopSec ${stop} s > shutdown-timeout ${shutdownSeconds} s`);
  t.ok(unit.get('Install')?.get('WantedBy')?.includes('multi-user.target'), 'WantedBy=multi-user.target');
});

t.test('parsed keys: hardening, a writable data dir and nothing else, no MemoryDenyWriteExecute', async (t) => {
  const want: Record<string, string> = {
    ProtectSystem: 'strict',
    NoNewPrivileges: 'yes',
    PrivateTmp: 'yes',
    ProtectHome: 'yes',
    CapabilityBoundingSet: '',
    RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
    SystemCallFilter: '@system-service',
  };
  for (const [key, v] of Object.entries(want)) t.equal(value(key), v, `${key}=${v}`);
  t.notOk(service.has('MemoryDenyWriteExecute'), 'MemoryDenyWriteExecute not set: V8\'s JIT needs W+X memory');
  const user = value('User');
  t.ok(value('DynamicUser') === 'yes' || (user !== undefined && !['root', '0'].includes(user)), 'a dynamic or dedicated user');
  const exec = value('ExecStart') ?? '';
  const dataDir = /--dir\s+(\S+)/.exec(exec)?.[1];
  t.ok(dataDir, `ExecStart sets --dir (${dataDir})`);
  t.strictSame(value('ReadWritePaths')?.split(/\s+/), [dataDir], 'ReadWritePaths= is the data dir');
  t.equal(`/var/lib/${value('StateDirectory')}`, dataDir, 'StateDirectory= creates it, owned by the service user');
  const config = /--config\s+(\S+)/.exec(exec)?.[1];
  t.equal(config, `/etc/${value('ConfigurationDirectory')}/relay.yaml`, 'the config is read from ConfigurationDirectory=');
});

t.test('parsed keys: the password is a systemd credential passed as PSYNC_RELAY_PASSWORD_FILE', async (t) => {
  const cred = value('LoadCredential') ?? '';
  t.match(cred, /^password:\/etc\/psync-relay\/password$/);
  t.ok(service.get('Environment')?.includes('PSYNC_RELAY_PASSWORD_FILE=%d/password'), 'Environment=PSYNC_RELAY_PASSWORD_FILE=%d/password');
  t.notMatch(text, /PSYNC_RELAY_PASSWORD=/, 'never the password itself');
});

if (SYSTEMD_ANALYZE) {
  t.test(`systemd-analyze verify (${SYSTEMD_ANALYZE}): no error and no warning`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'psync-relay-unit-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    // verify insists that ExecStart's program exists: point it at this node, keep everything else.
    const copy = join(dir, 'psync-relay.service');
    writeFileSync(copy, text.replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
    const res = await run(SYSTEMD_ANALYZE, ['verify', copy], { cwd: dir }).catch((err: { code: number; stderr: string }) => err);
    t.equal('code' in res ? res.code : 0, 0, 'exit status 0');
    // An unknown key or an unparsable value is only a warning (exit 0): any output is a finding.
    t.equal(res.stderr, '', 'systemd printed nothing');
    const sec = await run(SYSTEMD_ANALYZE, ['security', '--offline=true', '--threshold=20', copy], { cwd: dir }).catch(
      (err: { code: number; stdout: string }) => err,
    );
    const level = /Overall exposure level for \S+: ([\d.]+)/.exec(sec.stdout)?.[1];
    t.equal('code' in sec ? sec.code : 0, 0, `systemd-analyze security: exposure ${level} is at most 2.0 ("OK")`);
  });
} else {
  t.fail('systemd-analyze is not installed (apt-get install systemd; .ci/run does): the unit file was not verified');
}
