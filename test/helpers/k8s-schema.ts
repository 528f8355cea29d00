/**
 * Offline schema checks for Kubernetes manifests, with kubernetes-models (the Kubernetes 1.27 OpenAPI schemas
 * compiled to ajv validators) and @kubernetes-models/prometheus-operator (the same, generated from the
 * ServiceMonitor CRD's own schema).
 *
 * Their validate() checks types, required fields and enums but accepts unknown fields, so a typo such as
 * `livenesProbe` would pass (kubectl's server-side validation rejects it). The packages' TypeScript interfaces are
 * generated from the same schemas without index signatures, so assigning each manifest as an object literal to its
 * interface makes tsc report every unknown field, at any depth: that is the second check.
 */
import ts from 'typescript';
import { join } from 'node:path';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { REPO_ROOT } from './relay-process.js';

interface Kind {
  /** Validates against the JSON schema; throws with ajv's messages. */
  validate(doc: unknown): void;
  /** The module and interface holding the kind's TypeScript type. */
  readonly module: string;
  readonly iface: string;
}

function kind(Model: new (data: never) => { validate(): void }, module: string, iface: string): Kind {
  return { validate: (doc) => new Model(doc as never).validate(), module, iface };
}

/** `apiVersion/kind` -> its model. A manifest of any other kind is an error: add it here to check it. */
export const KINDS: Readonly<Record<string, Kind>> = {
  'v1/ConfigMap': kind(ConfigMap, 'kubernetes-models/v1', 'IConfigMap'),
  'v1/Service': kind(Service, 'kubernetes-models/v1', 'IService'),
  'apps/v1/StatefulSet': kind(StatefulSet, 'kubernetes-models/apps/v1', 'IStatefulSet'),
  'policy/v1/PodDisruptionBudget': kind(PodDisruptionBudget, 'kubernetes-models/policy/v1', 'IPodDisruptionBudget'),
  'monitoring.coreos.com/v1/ServiceMonitor': kind(ServiceMonitor, '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1', 'IServiceMonitor'),
};

export interface Manifest {
  /** `file#index`, for messages. */
  readonly where: string;
  readonly doc: { apiVersion?: unknown; kind?: unknown };
}

/** The model for a manifest's apiVersion/kind, or undefined. */
export function kindOf(doc: Manifest['doc']): Kind | undefined {
  return KINDS[`${String(doc.apiVersion)}/${String(doc.kind)}`];
}

/**
 * Type-checks every manifest against its kind's interface in one in-memory program; returns tsc's messages
 * (empty: no unknown field, no wrong type). Manifests of unknown kinds are left out (kindOf() reports them).
 */
export function typeCheckManifests(manifests: readonly Manifest[]): string[] {
  // A file that does not exist on disk, placed in the repository so that node_modules resolves from it.
  const virtual = join(REPO_ROOT, 'test', '__k8s_manifests__.ts');
  const imports = new Set<string>();
  const decls: string[] = [];
  manifests.forEach((m, i) => {
    const k = kindOf(m.doc);
    if (!k) return;
    imports.add(`import type { ${k.iface} } from '${k.module}';`);
    decls.push(`// ${m.where}\nexport const m${i}: ${k.iface} = ${JSON.stringify(m.doc, null, 1)};`);
  });
  const source = [...imports, ...decls].join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, version, ...rest) =>
    name === virtual ? ts.createSourceFile(name, source, version) : getSourceFile.call(host, name, version, ...rest);
  host.fileExists = (name) => name === virtual || fileExists.call(host, name);
  host.readFile = (name) => (name === virtual ? source : readFile.call(host, name));
  const program = ts.createProgram([virtual], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (!d.file || d.start === undefined) return text;
    // Name the manifest: the nearest "// file#index" comment above the error.
    const before = d.file.text.slice(0, d.start);
    const where = [...before.matchAll(/^\/\/ (\S+)$/gm)].at(-1)?.[1] ?? d.file.fileName;
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    return `${where}: ${text} (at: ${d.file.text.split('\n')[line]?.trim()})`;
  });
}
