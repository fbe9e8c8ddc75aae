// A config source spec: `kubernetes://NAMESPACE/CONFIGMAP` or a path. Apart
// from kubernetes.ts so that telling them apart (argument checks, a router
// that reads files only) does not load the API client and undici.

export const KUBERNETES_SCHEME = 'kubernetes://';

// DNS-1123 subdomain (ConfigMap names) and label (namespaces).
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface ConfigMapRef {
  readonly namespace: string;
  readonly name: string;
}

/**
 * `kubernetes://NAMESPACE/NAME` → its parts; undefined for anything not of
 * that scheme (a file or directory). A malformed one throws, naming the form.
 */
export function parseKubernetesSource(spec: string): ConfigMapRef | undefined {
  if (!spec.startsWith(KUBERNETES_SCHEME)) return undefined;
  const parts = spec.slice(KUBERNETES_SCHEME.length).split('/');
  const [namespace, name] = parts;
  if (parts.length !== 2 || namespace === undefined || name === undefined || !NAMESPACE.test(namespace) || !NAME.test(name)) {
    throw new Error(`config source "${spec}": expected kubernetes://NAMESPACE/CONFIGMAP`);
  }
  return { namespace, name };
}

/** The file name a key's issues are reported under: `kubernetes://NS/NAME/KEY`. */
export function keyFile(ref: ConfigMapRef, key: string): string {
  return `${KUBERNETES_SCHEME}${ref.namespace}/${ref.name}/${key}`;
}
