/**
 * Validation of custom resources against the CRDs of the releases the
 * project pins (e2e/versions.json): the OpenAPI schemas of each CRD version,
 * as the release ships them, saved in this folder with where they came from
 * (`source` in each file). A manifest fails when its apiVersion is one the
 * release does not serve, when it names a field the schema does not have,
 * or when a value breaks the schema's types, enums, patterns or bounds.
 * Kubernetes' own CEL rules (`x-kubernetes-validations`) are not evaluated.
 *
 * @module
 */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";

/** One version of a CRD as a release serves it. */
export interface CrdVersion {
  /** The version, as `v1`. */
  readonly name: string;
  /** Whether the API server serves it. */
  readonly served: boolean;
  /** Whether objects are stored in it. */
  readonly storage: boolean;
  /** Its OpenAPI v3 schema. */
  readonly schema: Record<string, unknown> | null;
}

/** A release's CRDs as saved here: where they came from, and each CRD's versions. */
export interface CrdFile {
  /** The release, repository, commit and paths the schemas were taken from. */
  readonly source: { readonly release: string; readonly commit: string; readonly paths: string[] };
  /** Each CRD: its group, kind and versions. */
  readonly crds: readonly {
    readonly group: string;
    readonly kind: string;
    readonly versions: readonly CrdVersion[];
  }[];
}

/** A custom resource as a manifest holds it. */
export interface Resource {
  /** `group/version`. */
  readonly apiVersion: string;
  /** The kind. */
  readonly kind: string;
  /** Everything else. */
  readonly [field: string]: unknown;
}

/**
 * A structural schema as the API server reads it, made strict: an object
 * schema that lists its properties and does not keep unknown fields
 * (`x-kubernetes-preserve-unknown-fields`) gets `additionalProperties: false`,
 * as `kubectl apply --validate=strict` refuses unknown fields (the server
 * would drop them without a word). `metadata` is the API server's, not the CRD's.
 */
function strict(schema: unknown, path: string[] = []): unknown {
  if (Array.isArray(schema)) return schema.map((item) => strict(item, path));
  if (schema === null || typeof schema !== "object") return schema;
  const node = schema as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "properties" && value !== null && typeof value === "object") {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, unknown>).map(([name, child]) => [
          name,
          path.length === 0 && name === "metadata" ? { type: "object" } : strict(child, [
            ...path,
            name,
          ]),
        ]),
      );
    } else out[key] = strict(value, path);
  }
  if (
    node.properties !== undefined && node.additionalProperties === undefined &&
    node["x-kubernetes-preserve-unknown-fields"] !== true
  ) out.additionalProperties = false;
  return out;
}

/** A version's schema, strict, with the fields every object has whether its CRD lists them or not. */
function rootSchema(schema: Record<string, unknown>): object {
  const root = strict(schema) as Record<string, unknown>;
  return {
    ...root,
    properties: {
      ...root.properties as object,
      apiVersion: { type: "string" },
      kind: { type: "string" },
      metadata: { type: "object" },
    },
  };
}

/** Validates custom resources against the CRDs of `files` (pure but for compiling). */
export class CrdSchemas {
  readonly #ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  readonly #validators = new Map<string, ValidateFunction>();
  readonly #versions = new Map<string, { served: boolean; release: string }>();
  readonly #kinds = new Set<string>();

  /** The CRDs of every file, each file one release. */
  constructor(files: readonly CrdFile[]) {
    for (const file of files) {
      for (const crd of file.crds) {
        this.#kinds.add(`${crd.group}/${crd.kind}`);
        for (const version of crd.versions) {
          const key = `${crd.group}/${version.name}/${crd.kind}`;
          this.#versions.set(key, { served: version.served, release: file.source.release });
          if (version.served && version.schema) {
            this.#validators.set(key, this.#ajv.compile(rootSchema(version.schema)));
          }
        }
      }
    }
  }

  /** Whether `group` is one of a pinned release's (so its kinds must be validated here). */
  covers(group: string): boolean {
    return [...this.#kinds].some((kind) => kind.startsWith(`${group}/`));
  }

  /**
   * Why `resource` cannot be applied to a cluster with these releases'
   * CRDs: an unknown kind, a version not served, or schema errors; empty when it can.
   */
  problems(resource: Resource): string[] {
    const [group, version] = resource.apiVersion.split("/");
    if (!this.#kinds.has(`${group}/${resource.kind}`)) {
      return [`${resource.kind} is not a kind of ${group} in the pinned releases`];
    }
    const key = `${group}/${version}/${resource.kind}`;
    const known = this.#versions.get(key);
    if (!known) return [`${resource.apiVersion} ${resource.kind}: no such version`];
    if (!known.served) {
      return [`${resource.apiVersion} ${resource.kind} is not served by ${known.release}`];
    }
    const validate = this.#validators.get(key)!;
    return validate(resource) ? [] : (validate.errors ?? []).map(describe);
  }
}

function describe(error: ErrorObject): string {
  const where = error.instancePath || "/";
  const extra = error.keyword === "additionalProperties"
    ? ` (${(error.params as { additionalProperty: string }).additionalProperty})`
    : error.keyword === "enum"
    ? ` (${(error.params as { allowedValues: unknown[] }).allowedValues.join(", ")})`
    : "";
  return `${where}: ${error.message}${extra}`;
}
