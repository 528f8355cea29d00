/**
 * config/prometheus-alerts.yml and the Grafana dashboard's queries, checked by Prometheus's own promtool (Debian's
 * prometheus package; .ci/run installs it): the rules and their templates parse, every dashboard query parses,
 * and the alerts fire on the series they are meant for and stay quiet on the others (`promtool test rules`).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { REPO_ROOT } from '../helpers/relay-process.js';

const run = promisify(execFile);
const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
const ALERTS = join(REPO_ROOT, 'config/prometheus-alerts.yml');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  annotations?: Record<string, string>;
}
interface Case {
  /** What the case shows. */
  readonly name: string;
  /** series -> promtool's expanding notation, one sample a minute ('0x30', '0+60000000x60'). */
  readonly series: Record<string, string>;
  readonly alert: string;
  /** At this time, exactly these instances have the alert firing. */
  readonly at: string;
  readonly firing: readonly string[];
}

const J = 'job="psync-relay"';
const CASES: Case[] = [
  {
    name: 'a target that cannot be scraped for over a minute',
    series: { [`up{${J},instance="down"}`]: '0x10', [`up{${J},instance="up"}`]: '1x10', 'up{job="other",instance="x"}': '0x10' },
    alert: 'PsyncRelayTargetDown',
    at: '3m',
    firing: ['down'],
  },
  {
    name: 'an unusable snapshot fires only while replicas wait for a full sync',
    series: {
      ...relay('stuck', { snapshot_usable: '0x30', connected_replicas: '3x30', online_replicas: '1x30' }),
      // Unusable but nobody waits: the normal state with refreshes by need.
      ...relay('idle', { snapshot_usable: '0x30', connected_replicas: '3x30', online_replicas: '3x30' }),
      ...relay('serving', { snapshot_usable: '1x30', connected_replicas: '3x30', online_replicas: '1x30' }),
    },
    alert: 'PsyncRelaySnapshotUnusable',
    at: '20m',
    firing: ['stuck'],
  },

  {
    name: 'a full disk log fires only when it holds under an hour of stream',
    series: {
      // 950 MB at 1 MB/s: 16 minutes of history.
      ...relay('fast', { log_disk_bytes: '950e6x60', log_disk_limit_bytes: '1e9x60', master_repl_offset: '0+60e6x60' }),
      // 950 MB at 10 kB/s: over a day.
      ...relay('slow', { log_disk_bytes: '950e6x60', log_disk_limit_bytes: '1e9x60', master_repl_offset: '0+600e3x60' }),
      ...relay('half', { log_disk_bytes: '500e6x60', log_disk_limit_bytes: '1e9x60', master_repl_offset: '0+60e6x60' }),
      ...relay('no-disk', { log_disk_bytes: '0x60', log_disk_limit_bytes: '0x60', master_repl_offset: '0+60e6x60' }),
    },
    alert: 'PsyncRelayDiskLogNearLimit',
    at: '45m',
    firing: ['fast'],
  },
  {
    name: 'a disk log that cannot take writes for over a minute',
    series: { ...relay('failing', { log_disk_failing: '0 0 1x10' }), ...relay('blip', { log_disk_failing: '0 1 0x10' }), ...relay('fine', { log_disk_failing: '0x12' }) },
    alert: 'PsyncRelayDiskLogFailing',
    at: '6m',
    firing: ['failing'],
  },
  {
    name: 'a disk log segment that could not be read back, within the last 15 minutes',
    series: { ...relay('bad', { log_disk_read_errors_total: '0 0 1x10' }), ...relay('fine', { log_disk_read_errors_total: '0x12' }) },
    alert: 'PsyncRelayDiskLogUnreadable',
    at: '6m',
    firing: ['bad'],
  },
  {
    name: 'a held snapshot given up (unreadable or damaged), within the last 15 minutes',
    series: { ...relay('bad', { snapshots_given_up_total: '0 0 1x10' }), ...relay('fine', { snapshots_given_up_total: '0x12' }) },
    alert: 'PsyncRelaySnapshotGivenUp',
    at: '6m',
    firing: ['bad'],
  },
  {
    name: 'over 10 refusals in 10 minutes, RESP or web, fire; a typo and a full /stream do not',
    series: {
      [`psync_relay_access_denied_total{${J},instance="guess",reason="auth"}`]: '0+5x20',
      [`psync_relay_access_denied_total{${J},instance="guess",reason="cmd"}`]: '0x20',
      [`psync_relay_access_denied_total{${J},instance="typo",reason="auth"}`]: '0 1 2x18',
      [`psync_relay_web_refused_total{${J},instance="page",reason="origin"}`]: '0+3x20',
      [`psync_relay_web_refused_total{${J},instance="busy",reason="subscribers"}`]: '0+10x20',
    },
    alert: 'PsyncRelayAccessDenied',
    at: '15m',
    firing: ['guess', 'page'],
  },
  {
    name: 'more than three snapshot refreshes in an hour',
    series: { ...relay('often', { snapshot_refreshes_total: '0+1x60' }), ...relay('rare', { snapshot_refreshes_total: '0+0.02x60' }) },
    alert: 'PsyncRelaySnapshotRefreshesFrequent',
    at: '60m',
    firing: ['often'],
  },
  {
    name: 'an event-loop p99 over 0.5 s for five minutes, not a spike, not another job',
    series: {
      [`nodejs_eventloop_lag_p99_seconds{${J},instance="stalled"}`]: '0.8x20',
      [`nodejs_eventloop_lag_p99_seconds{${J},instance="spike"}`]: '0.01 0.9 0.9 0.01x17',
      [`nodejs_eventloop_lag_p99_seconds{${J},instance="fine"}`]: '0.02x20',
      'nodejs_eventloop_lag_p99_seconds{job="other",instance="x"}': '2x20',
    },
    alert: 'PsyncRelayEventLoopLag',
    at: '10m',
    firing: ['stalled'],
  },
];

function relay(instance: string, metrics: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(metrics).map(([m, v]) => [`psync_relay_${m}{${J},instance="${instance}"}`, v]));
}

if (!PROMTOOL) {
  t.fail('promtool is not installed: apt-get install --no-install-recommends prometheus (.ci/run does it)');
} else {
  const promtool = PROMTOOL;
  const tmp = mkdtempSync(join(tmpdir(), 'psync-relay-promtool-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const check = (args: string[]) => run(promtool, args, { cwd: tmp }).catch((err: { code: number; stdout: string; stderr: string }) => err);

  t.test(`promtool check rules (${promtool}): the alerts and their templates parse`, async (t) => {
    const res = await check(['check', 'rules', ALERTS]);
    t.equal('code' in res ? res.code : 0, 0, `${res.stdout}${res.stderr}`);
  });

  t.test('promtool check rules: every Grafana dashboard query parses as PromQL', async (t) => {
    const dash = JSON.parse(readFileSync(join(REPO_ROOT, 'config/grafana-dashboard.json'), 'utf8')) as {
      panels: { id: number; targets?: { refId: string; expr: string }[] }[];
    };
    // Grafana's variables, replaced by what Grafana would put there.
    const rules = dash.panels.flatMap((p) =>
      (p.targets ?? []).map((q) => ({
        record: `dashboard:panel_${p.id}_${q.refId}`,
        expr: q.expr.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*'),
      })),
    );
    t.ok(rules.length > 10, `${rules.length} queries`);
    const file = join(tmp, 'dashboard-rules.yml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const res = await check(['check', 'rules', file]);
    t.equal('code' in res ? res.code : 0, 0, `${res.stdout}${res.stderr}`);
  });

  t.test('promtool test rules: each alert fires for the relays it is meant for, and only those', async (t) => {
    // The annotations are checked by check rules above; without them the expectations stay short.
    const groups = (parse(readFileSync(ALERTS, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups;
    const stripped = join(tmp, 'alerts.yml');
    writeFileSync(stripped, stringify({ groups: groups.map((g) => ({ ...g, rules: g.rules.map(({ annotations: _, ...r }) => r) })) }));
    const severity = new Map(groups.flatMap((g) => g.rules).map((r) => [r.alert, (r as { labels?: { severity?: string } }).labels?.severity]));
    const tests = CASES.map((c) => ({
      name: c.name,
      interval: '1m',
      input_series: Object.entries(c.series).map(([series, values]) => ({ series, values })),
      alert_rule_test: [
        { eval_time: '0m', alertname: c.alert, exp_alerts: [] },
        {
          eval_time: c.at,
          alertname: c.alert,
          exp_alerts: c.firing.map((instance) => ({ exp_labels: { instance, job: 'psync-relay', severity: severity.get(c.alert) } })),
        },
      ],
    }));
    const file = join(tmp, 'alerts.test.yml');
    writeFileSync(file, stringify({ rule_files: [stripped], evaluation_interval: '1m', tests }));
    const res = await check(['test', 'rules', file]);
    t.equal('code' in res ? res.code : 0, 0, `${res.stdout}${res.stderr}`);
    const names = groups.flatMap((g) => g.rules.map((r) => r.alert));
    for (const c of CASES) t.ok(names.includes(c.alert), `${c.alert} exists (${c.name})`);
  });
}
