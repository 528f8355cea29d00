/**
 * deploy/kubernetes cannot be applied here: each manifest is checked against its kind's schema offline
 * (test/helpers/k8s-schema.ts: the Kubernetes OpenAPI and the ServiceMonitor CRD schema, plus unknown fields), and
 * the objects against each other and against the relay's own config rules.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { kindOf, typeCheckManifests, type Manifest } from '../helpers/k8s-schema.js';
import { REPO_ROOT } from '../helpers/relay-process.js';

const DIR = join(REPO_ROOT, 'deploy/kubernetes');
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));
const manifests: Manifest[] = files
  .filter((f) => f !== 'kustomization.yaml')
  // YAML 1.1, as Kubernetes reads it (0440 would be octal there, decimal in YAML 1.2).
  .flatMap((f) => parseAllDocuments(readFileSync(join(DIR, f), 'utf8'), { version: '1.1' }).map((d, i) => ({ where: `${f}#${i}`, doc: d.toJS() as Manifest['doc'] })));

// Loose views of the objects, for the cross-checks; the schema checks below vouch for their shapes.
const byKind = (kind: string): any => manifests.find((m) => m.doc.kind === kind)?.doc;
const sts = byKind('StatefulSet');
const svc = byKind('Service');
const pdb = byKind('PodDisruptionBudget');
const sm = byKind('ServiceMonitor');
const cm = byKind('ConfigMap');
const pod = sts?.spec?.template?.spec;
const container = pod?.containers?.[0];

const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

t.test('kustomization.yaml lists every manifest in the directory', async (t) => {
  const kustomization = parse(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  t.strictSame([...kustomization.resources].sort(), files.filter((f) => f !== 'kustomization.yaml').sort());
  t.strictSame(
    manifests.map((m) => m.doc.kind).sort(),
    ['ConfigMap', 'PodDisruptionBudget', 'Service', 'ServiceMonitor', 'StatefulSet'],
    'a ConfigMap, a headless Service, a StatefulSet, a PodDisruptionBudget and a ServiceMonitor',
  );
});

t.test('every manifest validates against its schema (kubernetes-models; the ServiceMonitor CRD schema)', async (t) => {
  for (const m of manifests) {
    const kind = kindOf(m.doc);
    t.ok(kind, `${m.where}: ${String(m.doc.apiVersion)} ${String(m.doc.kind)} has a schema`);
    t.doesNotThrow(() => kind?.validate(m.doc), `${m.where} is valid`);
  }
});

t.test('no manifest has an unknown field or a wrongly typed one (tsc against the schema types)', async (t) => {
  t.strictSame(typeCheckManifests(manifests), [], 'no type error');
});

t.test('the schema checks catch a typo, a wrong type and a missing field', async (t) => {
  const broken = structuredClone(sts);
  broken.spec.template.spec.containers[0].livenesProbe = broken.spec.template.spec.containers[0].livenessProbe;
  t.equal(typeCheckManifests([{ where: 'typo', doc: broken }]).length, 1, 'livenesProbe: unknown field');
  const monitor = structuredClone(sm);
  monitor.spec.endpoints[0].port = 8080;
  t.throws(() => kindOf(monitor)?.validate(monitor), 'ServiceMonitor endpoint port must be a name (the CRD schema)');
  const noSelector = structuredClone(sts);
  delete noSelector.spec.selector;
  t.throws(() => kindOf(noSelector)?.validate(noSelector), 'a StatefulSet needs a selector');
});

t.test('the headless Service, the PodDisruptionBudget and the ServiceMonitor select the StatefulSet\'s pods', async (t) => {
  const podLabels = sts.spec.template.metadata.labels;
  t.ok(matches(sts.spec.selector.matchLabels, podLabels), 'StatefulSet selector');
  t.equal(svc.spec.clusterIP, 'None', 'the Service is headless (one DNS name per relay, i.e. per shard)');
  t.equal(sts.spec.serviceName, svc.metadata.name, 'serviceName is that Service');
  t.ok(matches(svc.spec.selector, podLabels), 'Service selector');
  t.ok(matches(pdb.spec.selector.matchLabels, podLabels), 'PodDisruptionBudget selector');
  t.equal(pdb.spec.maxUnavailable, 1);
  t.ok(matches(sm.spec.selector.matchLabels, svc.metadata.labels), 'ServiceMonitor selects the Service');
  const portNames = (svc.spec.ports as Array<{ name: string; targetPort: string }>).map((p) => p.name);
  t.strictSame(portNames.sort(), ['resp', 'web'], 'RESP and web ports');
  for (const e of sm.spec.endpoints) t.ok(portNames.includes(e.port), `ServiceMonitor scrapes port ${e.port}`);
  const containerPorts = (container.ports as Array<{ name: string }>).map((p) => p.name);
  for (const p of svc.spec.ports) t.ok(containerPorts.includes(p.targetPort), `container port ${p.targetPort}`);
});

t.test('the pod runs the ConfigMap\'s config, which loads, never binds without a password, and fits the probes', async (t) => {
  const configMount = container.volumeMounts.find((v: any) => pod.volumes.find((w: any) => w.name === v.name)?.configMap);
  const args: string[] = container.args;
  const configPath = args[args.indexOf('--config') + 1];
  t.equal(configPath, `${configMount.mountPath}/relay.yaml`, '--config is the mounted ConfigMap');
  t.ok(cm.data['relay.yaml'], 'the ConfigMap holds relay.yaml');

  // Load it as the pod would: the Secret's files through the PSYNC_RELAY_*_FILE variables.
  const tmp = mkdtempSync(join(tmpdir(), 'psync-relay-k8s-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  writeFileSync(join(tmp, 'relay.yaml'), cm.data['relay.yaml']);
  const env: NodeJS.ProcessEnv = {};
  for (const e of container.env as Array<{ name: string; value?: string }>) {
    if (!e.name.startsWith('PSYNC_RELAY_')) continue;
    const secretFile = join(tmp, e.name);
    writeFileSync(secretFile, `secret-for-${e.name}\n`);
    env[e.name] = secretFile;
  }
  const podArgs = args.map((a) => (a === configPath ? join(tmp, 'relay.yaml') : a.replace('$(POD_INDEX)', '0')));
  const { config } = loadConfig(podArgs, env);
  t.equal(config.listen.bind, '0.0.0.0', 'listens on the pod network');
  t.equal(config.listen.password, 'secret-for-PSYNC_RELAY_PASSWORD_FILE', 'with the password from the Secret');
  t.equal(config.web.token, 'secret-for-PSYNC_RELAY_WEB_TOKEN_FILE', 'the web server (on the pod IP) has its token');
  t.equal(config.upstream.password, 'secret-for-PSYNC_RELAY_UPSTREAM_PASSWORD_FILE');
  t.equal(config.upstream.host, 'redis-shard-0.redis-shards', 'pod 0 follows shard 0');

  const secretMount = container.volumeMounts.find((v: any) => pod.volumes.find((w: any) => w.name === v.name)?.secret);
  for (const e of container.env.filter((x: any) => x.name.endsWith('_FILE'))) {
    t.ok(e.value.startsWith(`${secretMount.mountPath}/`), `${e.name} points into the mounted Secret`);
  }
  const secretName = pod.volumes.find((w: any) => w.secret).secret.secretName;
  const smCredentials = sm.spec.endpoints[0].authorization.credentials;
  t.equal(smCredentials.name, secretName, 'the ServiceMonitor reads the web token from the same Secret');
  t.ok(
    container.env.some((e: any) => e.name === 'PSYNC_RELAY_WEB_TOKEN_FILE' && e.value === `${secretMount.mountPath}/${smCredentials.key}`),
    'and the same key the relay uses',
  );

  const webPort = container.ports.find((p: any) => p.name === 'web').containerPort;
  t.equal(webPort, config.web.port, 'the web container port is web.port');
  t.equal(container.ports.find((p: any) => p.name === 'resp').containerPort, config.listen.port, 'the resp port is listen.port');
  t.strictSame(container.livenessProbe.httpGet, { path: '/healthz', port: 'web' }, 'liveness: /healthz');
  t.strictSame(container.readinessProbe.httpGet, { path: '/readyz', port: 'web' }, 'readiness: /readyz');
  t.ok(pod.terminationGracePeriodSeconds > config.shutdownTimeoutMs / 1000, 'terminationGracePeriodSeconds > shutdown-timeout');

  const dataMount = container.volumeMounts.find((v: any) => v.name === sts.spec.volumeClaimTemplates[0].metadata.name);
  t.equal(dataMount?.mountPath, config.dir, 'the volumeClaimTemplate is mounted at dir');
  t.notOk(dataMount?.readOnly, 'and writable');
});

t.test('non-root, read-only root filesystem, no privilege escalation, resources set', async (t) => {
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.ok(pod.securityContext.runAsUser > 0, 'a non-zero UID');
  t.ok(pod.securityContext.fsGroup > 0, 'fsGroup: the data volume is writable for it');
  t.equal(container.securityContext.readOnlyRootFilesystem, true);
  t.equal(container.securityContext.allowPrivilegeEscalation, false);
  t.strictSame(container.securityContext.capabilities.drop, ['ALL']);
  for (const m of container.volumeMounts) {
    if (m.mountPath !== '/data') t.equal(m.readOnly, true, `${m.mountPath} is read-only`);
  }
  t.ok(container.resources.requests.cpu && container.resources.requests.memory, 'requests');
  t.ok(container.resources.limits.memory, 'a memory limit');
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  t.match(container.image, new RegExp(`:${version.replace(/\./g, '\\.')}$`), 'the image tag is the package version');
});
