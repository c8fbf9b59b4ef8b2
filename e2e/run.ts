/**
 * `deno task e2e`: the end-to-end suite on a kind cluster. It builds the
 * image from the repository's Dockerfile (so `deno compile` runs for real),
 * checks the container, creates a kind cluster with Istio and the Gateway
 * API CRDs (versions pinned in e2e/versions.json), runs every command of the
 * cluster walkthroughs of docs/walkthroughs.md as written (e2e/walkthroughs.ts
 * lists the few it replaces and why) and asserts each with `tcp-echo client … --json`
 * and the servers' records, checks the pods themselves, runs the dual-stack
 * walkthrough on a second, dual-stack kind cluster, and tears everything
 * down, also on failure.
 *
 * It needs Docker, kind's and Istio's release downloads, `kubectl`, `nc`
 * (netcat-openbsd), IPv6 on the host (the dual-stack cluster) and about 8 GB
 * of memory. Each step is named; a failing
 * step prints its command's output, `kubectl describe` of the pods and their
 * logs, then the suite stops.
 *
 * @module
 */
import { parse as parseYaml, parseAllDocuments } from "yaml";
import {
  binomialBounds,
  byFamily,
  countOf,
  type DelayedChange,
  delayedChange,
  drainMs,
  DUAL_STACK_SECTION,
  ENDPOINT_REMOVAL_MS,
  firstAnswer,
  gatewayApiInstallUrl,
  holdSummary,
  type IstioPin,
  judgeAllAnswered,
  judgeBannerAddresses,
  judgeDualStackService,
  judgeFamilyRecords,
  judgeFlowThroughDelete,
  judgeMeshRecords,
  judgeProxyRestartHold,
  judgeRolloutHold,
  judgeShiftHold,
  parseE2eArgs,
  parseFamilyProbes,
  parseFlowReport,
  parseHoldReport,
  parseOpenRecords,
  parseProbeCounts,
  parseProbeReport,
  parseVersions,
  podOf,
  type ProbeSummary,
  sectionCommands,
  terminationGraceMs,
  UDP_MESH_SECTION,
  type Versions,
  WALKTHROUGH_PAGE,
  type WALKTHROUGH_SECTIONS,
} from "./lib.ts";
import {
  AMBIENT_STEPS,
  AUTHORIZATION_STEPS,
  commandToRun,
  DUAL_STACK_COMMANDS,
  DUAL_STACK_KIND_CONFIG,
  HOLD_COMMANDS,
  HOLD_REPORT_FILE,
  interactiveInput,
  REPORT_FILES,
  UDP_COMMANDS,
} from "./walkthroughs.ts";
import type { HoldReport } from "../client/hold_record.ts";
import { parseBannerText } from "../src/wire.ts";

const repoDir = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();
const encoder = new TextEncoder();
const CLUSTER = "tcp-echo-e2e";
/** The dual-stack section's cluster: a second one, made last and deleted after it. */
const DUAL_STACK_CLUSTER = "tcp-echo-e2e-dual-stack";
const CONTAINER = "tcp-echo-e2e";

/** Runs a command; resolves with its output, or throws with it when it fails. */
async function run(command: string, args: string[], options: { input?: string } = {}) {
  const child = new Deno.Command(command, {
    args,
    cwd: repoDir,
    stdin: options.input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(options.input));
    await writer.close();
  }
  const output = await child.output();
  const text = decoder.decode(output.stdout) + decoder.decode(output.stderr);
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")} exited ${output.code}:\n${text}`);
  }
  return decoder.decode(output.stdout);
}

const kubectl = (...args: string[]) => run("kubectl", args);

/** Runs a command whatever its exit code; resolves with its standard output (a report). */
async function capture(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, cwd: repoDir, stdin: "null" }).output();
  return decoder.decode(output.stdout);
}

/**
 * A bash session that keeps its directory and variables from one command to
 * the next, as a reader's terminal does.
 */
class Shell {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffered = "";

  constructor(env: Record<string, string>) {
    this.#child = new Deno.Command("bash", {
      args: ["--noprofile", "--norc"],
      cwd: repoDir,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Runs `command`; resolves with its exit code and output (stdout and stderr). */
  async run(command: string): Promise<{ code: number; output: string }> {
    const marker = `__e2e_done_${crypto.randomUUID()}__`;
    await this.#writer.write(encoder.encode(`{ ${command}\n} 2>&1; echo "${marker} $?"\n`));
    while (true) {
      const at = this.#buffered.indexOf(marker);
      if (at >= 0) {
        const end = this.#buffered.indexOf("\n", at);
        if (end >= 0) {
          const code = Number(this.#buffered.slice(at + marker.length + 1, end));
          const output = this.#buffered.slice(0, at);
          this.#buffered = this.#buffered.slice(end + 1);
          return { code, output };
        }
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`the shell ended during: ${command}`);
      this.#buffered += value;
    }
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#reader.cancel().catch(() => {});
    await this.#child.status;
  }
}

/** A port-forward kept open while a step needs it. */
async function portForward(target: string, namespace: string, ports: string[]) {
  const child = new Deno.Command("kubectl", {
    args: ["port-forward", "-n", namespace, "--address", "127.0.0.1", target, ...ports],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (seen.split("Forwarding from").length <= ports.length) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`port-forward ${target} ended`);
    seen += value;
  }
  // kubectl writes a line per connection: keep reading, or the full pipe would stall it.
  const draining = (async () => {
    while (!(await reader.read()).done);
  })().catch(() => {});
  return {
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await draining;
    },
  };
}

// ---------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------

/** What a step proves, and where the docs say it. */
interface Step {
  readonly name: string;
  readonly proves: string;
  run(context: Context): Promise<void>;
}

interface Context {
  readonly versions: Versions;
  /** The Istio release of this run, one of `versions.istio`. */
  readonly istio: IstioPin;
  /** The image the kits name (k8s/base/kustomization.yaml), built here and loaded into kind. */
  readonly image: string;
  readonly tools: string;
  /** The text of docs/walkthroughs.md, whose commands the walkthrough steps run. */
  readonly walkthroughs: string;
}

/**
 * A probe with the client inside the image, from a pod in the mesh: `pod` is
 * a pod's name (its container has the same name) or `deploy/NAME` with
 * `container`.
 */
async function probeInMesh(
  namespace: string,
  pod: string,
  target: string,
  args: string[],
  container = pod,
) {
  const output = await capture("kubectl", [
    "exec",
    "-n",
    namespace,
    pod,
    "-c",
    container,
    "--",
    "/tcp-echo",
    "client",
    target,
    ...args,
    "--json",
  ]);
  return parseProbeReport(output);
}

/** A probe with the repository's client from this machine. */
async function probeHere(target: string, args: string[]): Promise<ProbeSummary> {
  const output = await capture(Deno.execPath(), [
    "run",
    "--allow-net",
    "--allow-read",
    `${repoDir}main.ts`,
    "client",
    target,
    ...args,
    "--json",
  ]);
  return parseProbeReport(output);
}

function expectOnly(summary: ProbeSummary, version: string, what: string): void {
  const versions = Object.keys(summary.versions);
  if (summary.succeeded !== summary.connections || versions.join() !== version) {
    throw new Error(
      `${what}: expected every probe to reach ${version}: ${JSON.stringify(summary)}`,
    );
  }
}

/** Retries `check` for up to `ms` (policies and routes take seconds to reach Envoy). */
async function eventually(ms: number, check: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + ms;
  while (true) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    }
  }
}

const STEPS: Step[] = [
  {
    name: "image",
    proves:
      "walkthroughs.md, The image: the Dockerfile builds, deno compile runs on the build stage",
    async run({ image }) {
      await run("docker", ["build", "-t", image, "."]);
      const size = Number(
        (await run("docker", ["image", "inspect", "-f", "{{.Size}}", image])).trim(),
      );
      console.log(`  image ${image}: ${(size / 2 ** 20).toFixed(1)} MiB`);
    },
  },
  {
    name: "container",
    proves:
      "walkthroughs.md, The image: read-only root, uid 65532, 256 MiB, banner and echo, client, " +
      "drain on stop",
    run: containerChecks,
  },
  {
    name: "cluster",
    proves: "README, On kind, from zero: kind create cluster, kind load docker-image",
    async run({ versions, image, tools }) {
      await run(`${tools}/kind`, [
        "create",
        "cluster",
        "--name",
        CLUSTER,
        "--image",
        versions.kindNodeImage,
        "--wait",
        "180s",
      ]);
      await run(`${tools}/kind`, ["load", "docker-image", image, "--name", CLUSTER]);
    },
  },
  {
    name: "istio",
    proves:
      "walkthroughs.md, Before the Istio walkthroughs: the install overlay exposes 31400 and " +
      "31401 on the ingress gateway; the Gateway API CRDs (the channel this Istio reads)",
    async run({ tools, versions, istio }) {
      await run(`${tools}/istioctl`, [
        "install",
        "-y",
        "-f",
        "k8s/istio-install/ingress-ports.yaml",
      ]);
      await kubectl(
        "apply",
        "--server-side",
        "-f",
        gatewayApiInstallUrl(versions.gatewayApi, istio.gatewayApiChannel),
      );
      await kubectl("label", "namespace", "default", "istio-injection=enabled", "--overwrite");
    },
  },
  {
    name: "walkthrough: Kubernetes and Istio, 31400 → v1, 31401 → v2",
    proves: "walkthroughs.md, Any cluster: v1 and v2 behind one Service; Istio: port 31400 " +
      "reaches v1, port 31401 reaches v2",
    run: classicWalkthrough,
  },
  {
    name: "pods: banner, metrics, drain under load, logs",
    proves: "walkthroughs.md, What k8s/ holds (Downward API, probes, scrape annotations, drain); " +
      "operations.md, Logs",
    run: podChecks,
  },
  {
    name: "open connections: a rollout restart",
    proves: "walkthroughs.md, What happens to open connections, Through a rollout restart: the " +
      "restarted pod's held connections end together by FIN or RST after its drain, the other " +
      "version's stay open, every replacement lands on another pod",
    run: rolloutHold,
  },
  {
    name: "walkthrough: UDP in a mesh",
    proves:
      "walkthroughs.md, UDP in a mesh: the datagrams pass the sidecars (the servers see the " +
      "client pod's address, and 127.0.0.6 for TCP through them); a flow whose pod is deleted " +
      "moves once to another pod, losing datagrams only between the two",
    run: udpMeshWalkthrough,
  },
  {
    name: "walkthrough: Gateway API",
    proves: "walkthroughs.md, Istio with the Kubernetes Gateway API",
    run: gatewayApiWalkthrough,
  },
  {
    name: "walkthrough: TLS passthrough and SNI routing",
    proves:
      "walkthroughs.md, TLS passthrough and SNI routing: each SNI reaches one version, through Istio's " +
      "PASSTHROUGH Gateway and through the Gateway API's TLSRoute",
    run: tlsPassthroughWalkthrough,
  },
  {
    name: "walkthrough: TCP traffic shifting",
    proves: "walkthroughs.md, Istio's TCP Traffic Shifting task: all to v1, then 80/20 within a " +
      "binomial bound",
    run: trafficShiftingWalkthrough,
  },
  {
    name: "open connections: a traffic shift",
    proves: "walkthroughs.md, What happens to open connections, Through a traffic shift: held " +
      "connections stay on v1 and open for 15 s past the 80/20 route, while new ones split 80/20 " +
      "within a binomial bound",
    run: shiftHold,
  },
  {
    name: "walkthrough: authorization for TCP traffic",
    proves:
      "walkthroughs.md, Istio's Authorization for TCP traffic task: each policy step allows and " +
      "refuses its ports",
    run: authorizationWalkthrough,
  },
  {
    name: "walkthrough: ambient mode",
    proves: "walkthroughs.md, Ambient mode: the app sees the client's own address; L4 policy by " +
      "principal and port; an L7 rule without a waypoint refuses all; through a waypoint the " +
      "app sees the waypoint, and a TCPRoute splits 80/20 within a binomial bound",
    run: ambientWalkthrough,
  },
  {
    name: "open connections: a ztunnel restart",
    proves: "walkthroughs.md, What happens to open connections, Through a ztunnel restart: every " +
      "held connection outlives the restart's start by 10 s, then ends by RST or FIN and is " +
      "replaced through the new ztunnel",
    run: ztunnelHold,
  },
  {
    name: "walkthrough: dual-stack",
    proves: "walkthroughs.md, Dual-stack: on a kind cluster with ipFamily dual, the Service's " +
      "ClusterIP of each family, each family answering over TCP and UDP, the records' family " +
      "and the client's address in it, both pod addresses in the banner",
    run: dualStackWalkthrough,
  },
];

async function containerChecks({ image }: Context): Promise<void> {
  await run("docker", [
    "run",
    "-d",
    "--name",
    CONTAINER,
    "--read-only",
    "--user",
    "65532:65532",
    "--memory",
    "256m",
    "-e",
    "NODE_NAME=e2e-node",
    "-p",
    "127.0.0.1::3333",
    "-p",
    "127.0.0.1::8080",
    image,
  ]);
  const port = Number(
    (await run("docker", ["port", CONTAINER, "3333/tcp"])).trim().split(":").at(-1),
  );
  await eventually(
    20_000,
    async () => (await Deno.connect({ hostname: "127.0.0.1", port })).close(),
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encoder.encode("hello\n"));
    await conn.closeWrite();
    const received = decoder.decode(await new Response(conn.readable).arrayBuffer());
    const expected = "Welcome, you are connected to node e2e-node.\nhello\n";
    if (received !== expected) throw new Error(`container answered ${JSON.stringify(received)}`);
  } catch (error) {
    conn.close();
    throw error;
  }
  const probe = parseProbeReport(
    await run("docker", [
      "run",
      "--rm",
      "--network",
      `container:${CONTAINER}`,
      image,
      "client",
      "127.0.0.1:3333",
      "--count",
      "5",
      "--json",
    ]),
  );
  if (probe.succeeded !== 5) throw new Error(`the image's client: ${JSON.stringify(probe)}`);
  await run("docker", ["stop", "-t", "30", CONTAINER]);
  const exitCode = (await run("docker", ["inspect", "-f", "{{.State.ExitCode}}", CONTAINER]))
    .trim();
  const logs = await run("docker", ["logs", CONTAINER]);
  if (exitCode !== "0" || !logs.includes("Shutdown complete.")) {
    throw new Error(`docker stop: exit ${exitCode}, logs:\n${logs}`);
  }
}

/** Runs the commands of a section of the page in one shell; `hooks` run checks before a command. */
async function runSection(
  page: string,
  section: typeof WALKTHROUGH_SECTIONS[number],
  hooks: Record<string, () => Promise<void>> = {},
): Promise<void> {
  const commands = sectionCommands(page, section);
  const shell = new Shell({ ...Deno.env.toObject(), INGRESS_HOST: "127.0.0.1" });
  try {
    for (const command of commands) {
      for (const [prefix, hook] of Object.entries(hooks)) {
        if (command.startsWith(prefix)) await hook();
      }
      const { run: toRun, why } = commandToRun(command);
      console.log(
        `  $ ${command}${why ? `\n    (runs instead: ${toRun || "nothing"}: ${why})` : ""}`,
      );
      if (toRun === "") continue;
      const input = interactiveInput(command);
      const line = input === undefined
        ? toRun
        : `printf '%s' '${input}' | timeout 10 ${toRun}; [ $? -eq 124 ] || true`;
      const { code, output } = await shell.run(line);
      if (code !== 0) {
        throw new Error(`${WALKTHROUGH_PAGE} command failed (exit ${code}): ${command}\n${output}`);
      }
      if (input !== undefined && !/Version v[12]\.\n[\s\S]*hello, app1/.test(output)) {
        throw new Error(`${command}: no banner and echo:\n${output}`);
      }
    }
  } finally {
    await shell.close();
  }
}

async function classicWalkthrough({ walkthroughs, image }: Context): Promise<void> {
  await runSection(walkthroughs, "## Any cluster: v1 and v2 behind one Service");
  await kubectl("rollout", "status", "deployment/tcp-echo-v1", "--timeout=180s");
  await kubectl("rollout", "status", "deployment/tcp-echo-v2", "--timeout=180s");
  await using _ingress = await portForward("service/istio-ingressgateway", "istio-system", [
    "31400",
    "31401",
  ]);
  await runSection(walkthroughs, "## Istio: port 31400 reaches v1, port 31401 reaches v2");
  await eventually(60_000, async () => {
    expectOnly(await probeHere("127.0.0.1:31400", ["--count", "20"]), "v1", "31400 from outside");
    expectOnly(await probeHere("127.0.0.1:31401", ["--count", "20"]), "v2", "31401 from outside");
  });
  // A pod in the mesh that runs the image; its /tcp-echo client probes from inside.
  await kubectl("run", "e2e-client", "--image", image, "--labels", "app=e2e-client");
  await kubectl("wait", "--for=condition=ready", "pod/e2e-client", "--timeout=120s");
  const gateway = "istio-ingressgateway.istio-system";
  expectOnly(
    await probeInMesh("default", "e2e-client", `${gateway}:31400`, ["--count", "20"]),
    "v1",
    "31400 in the mesh",
  );
  expectOnly(
    await probeInMesh("default", "e2e-client", `${gateway}:31401`, ["--count", "20"]),
    "v2",
    "31401 in the mesh",
  );
}

/** The pods' own facts, as the Downward API hands them to the banner. */
async function podChecks(): Promise<void> {
  const pods = JSON.parse(await kubectl("get", "pods", "-l", "app=tcp-echo", "-o", "json")).items;
  for (const pod of pods) {
    const name = pod.metadata.name;
    await using _forward = await portForward(`pod/${name}`, "default", [
      "13333:3333",
      "18080:8080",
    ]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: 13333 });
    await conn.closeWrite();
    const banner = parseBannerText(decoder.decode(await new Response(conn.readable).arrayBuffer()));
    const expected = {
      node: pod.spec.nodeName,
      pod: name,
      namespace: pod.metadata.namespace,
      ip: pod.status.podIP,
      serviceAccount: pod.spec.serviceAccountName,
      version: pod.metadata.labels.version,
    };
    for (const [key, value] of Object.entries(expected)) {
      if (banner[key as keyof typeof banner] !== value) {
        throw new Error(
          `${name}: banner ${key} is ${banner[key as keyof typeof banner]}, not ${value}`,
        );
      }
    }
    const annotations = pod.metadata.annotations;
    if (annotations["prometheus.io/port"] !== "8080") {
      throw new Error(`${name}: scrape port annotation`);
    }
    const metrics =
      await (await fetch(`http://127.0.0.1:18080${annotations["prometheus.io/path"]}`)).text();
    if (!metrics.includes('tcp_echo_connections_total{port="3333"}')) {
      throw new Error(`${name}: /metrics`);
    }
  }
  await drainUnderLoad();
  const logs = await kubectl("logs", "deploy/tcp-echo-v1", "-c", "tcp-echo-container");
  if (!/ - TCP connection open\. /.test(logs) || !/ - TCP connection closed\. reason=/.test(logs)) {
    throw new Error(`kubectl logs has no open and closed records:\n${logs.slice(-2_000)}`);
  }
}

/**
 * Deletes a pod while load runs through the Service: connections open before
 * the delete must all finish (DRAIN_DELAY 5 s, then SHUTDOWN_GRACE 10 s: the
 * 8 s load ends within them).
 */
async function drainUnderLoad(): Promise<void> {
  const load = run("kubectl", [
    "exec",
    "e2e-client",
    "-c",
    "e2e-client",
    "--",
    "/tcp-echo",
    "client",
    "tcp-echo:3333",
    "load",
    "--connections",
    "20",
    "--duration",
    "8s",
    "--json",
  ]);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const [pod] = (await kubectl("get", "pods", "-l", "app=tcp-echo,version=v1", "-o", "name")).trim()
    .split("\n");
  await kubectl("delete", pod, "--wait=false");
  const report = JSON.parse((await load).trim().split("\n").at(-1)!);
  if (Object.keys(report.failures).length > 0 || report.operations === 0) {
    throw new Error(`load during the delete of ${pod}: ${JSON.stringify(report)}`);
  }
  await kubectl("rollout", "status", "deployment/tcp-echo-v1", "--timeout=180s");
}

/**
 * Without a load balancer a Gateway API gateway gets no address and is never
 * Programmed: a ClusterIP Service gives it one, reached through a port-forward.
 */
async function gatewayOnClusterIp(gateway: string): Promise<void> {
  await kubectl(
    "annotate",
    `gateways.gateway.networking.k8s.io/${gateway}`,
    "networking.istio.io/service-type=ClusterIP",
    "--overwrite",
  );
  await eventually(180_000, async () => {
    await kubectl("rollout", "status", `deployment/${gateway}-istio`, "--timeout=60s");
  });
}

async function gatewayApiWalkthrough({ walkthroughs }: Context): Promise<void> {
  const forwards: AsyncDisposable[] = [];
  try {
    await runSection(walkthroughs, "## Istio with the Kubernetes Gateway API", {
      "kubectl wait --for=condition=programmed": () => gatewayOnClusterIp("tcp-echo-gateway"),
      "nc $INGRESS_HOST 31400": async () => {
        await kubectl("rollout", "status", "deployment/tcp-echo-gateway-istio", "--timeout=180s");
        forwards.push(
          await portForward("service/tcp-echo-gateway-istio", "default", ["31400", "31401"]),
        );
      },
    });
    await eventually(60_000, async () => {
      expectOnly(await probeHere("127.0.0.1:31400", ["--count", "20"]), "v1", "TCPRoute 31400");
      expectOnly(await probeHere("127.0.0.1:31401", ["--count", "20"]), "v2", "TCPRoute 31401");
    });
  } finally {
    for (const forward of forwards) await forward[Symbol.asyncDispose]();
  }
  // The task's kit uses the ingress gateway's 31400 too: the classic routes must go first.
  await kubectl("delete", "-k", "k8s/gateway-api", "--ignore-not-found");
  await kubectl("delete", "-k", "k8s", "--ignore-not-found");
}

/** Probes `127.0.0.1:8443` with each SNI and expects exactly its version. */
async function expectSniRouting(what: string): Promise<void> {
  await eventually(60_000, async () => {
    for (const version of ["v1", "v2"]) {
      const tls = ["--tls", "--sni", `${version}.example.com`, "--ca", "tls.crt", "--count", "20"];
      expectOnly(await probeHere("127.0.0.1:8443", tls), version, `${what} ${version}`);
    }
  });
}

async function tlsPassthroughWalkthrough({ walkthroughs }: Context): Promise<void> {
  const forwards: AsyncDisposable[] = [];
  const closeForwards = async () => {
    for (const forward of forwards.splice(0)) await forward[Symbol.asyncDispose]();
  };
  try {
    await runSection(walkthroughs, "## TLS passthrough and SNI routing", {
      "openssl s_client": async () => {
        forwards.push(
          await portForward("service/istio-ingressgateway", "istio-system", ["8443:443"]),
        );
      },
      "kubectl apply -k k8s/gateway-api-tls": async () => {
        await expectSniRouting("PASSTHROUGH Gateway:");
        await closeForwards();
        await kubectl("delete", "-k", "k8s/istio-tls-passthrough", "--ignore-not-found");
      },
      "kubectl wait --for=condition=programmed": () => gatewayOnClusterIp("tcp-echo-tls-gateway"),
      "deno task client": async () => {
        if (forwards.length > 0) return;
        forwards.push(
          await portForward("service/tcp-echo-tls-gateway-istio", "default", ["8443:443"]),
        );
      },
    });
    await expectSniRouting("TLSRoute:");
  } finally {
    await closeForwards();
    await Deno.remove(`${repoDir}tls.crt`).catch(() => {});
    await Deno.remove(`${repoDir}tls.key`).catch(() => {});
  }
  await kubectl("delete", "-k", "k8s/gateway-api-tls", "--ignore-not-found");
  await kubectl("delete", "secret", "tcp-echo-tls", "--ignore-not-found");
}

/**
 * Answers of `count` raw line probes to the ingress gateway, by the first word
 * of their last line (a banner, where the servers send one, comes before it).
 */
async function linePrefixes(count: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: 31400 });
    await conn.write(encoder.encode(`probe ${i}\n`));
    await conn.closeWrite();
    const answer = decoder.decode(await new Response(conn.readable).arrayBuffer());
    const last = answer.slice(answer.lastIndexOf("\n", answer.length - 2) + 1);
    const word = last.endsWith(` probe ${i}\n`) ? last.split(" ")[0] : `bad:${answer}`;
    seen[word] = (seen[word] ?? 0) + 1;
  }
  return seen;
}

/** Line probes until every one is answered by `one` (v1): the route to all-v1 is in place. */
async function expectAllOnV1(probes: number): Promise<void> {
  await eventually(60_000, async () => {
    const seen = await linePrefixes(probes);
    if (seen.one !== probes) throw new Error(`all to v1: ${JSON.stringify(seen)}`);
  });
}

/** Line probes until `two` (v2) answers within the binomial bound of an 80/20 split. */
async function expectSplit8020(probes: number, what: string): Promise<void> {
  const { low, high } = binomialBounds(probes, 0.2, 0.001);
  await eventually(60_000, async () => {
    const seen = await linePrefixes(probes);
    const two = seen.two ?? 0;
    if ((seen.one ?? 0) + two !== probes || two < low || two > high) {
      throw new Error(
        `${what}: ${JSON.stringify(seen)}, v2 share must be ${low}..${high} of ${probes}`,
      );
    }
    console.log(`  ${what}: v2 answered ${two} of ${probes} (bound ${low}..${high})`);
  });
}

async function trafficShiftingWalkthrough({ walkthroughs }: Context): Promise<void> {
  const probes = 200;
  await using _ingress = await portForward("service/istio-ingressgateway", "istio-system", [
    "31400",
  ]);
  await runSection(walkthroughs, "## Istio's TCP Traffic Shifting task, with this image", {
    "for i in $(seq 1 20)": async () => {
      await kubectl(
        "rollout",
        "status",
        "-n",
        "istio-io-tcp-traffic-shifting",
        "deployment/tcp-echo-v1",
        "--timeout=180s",
      );
    },
    "kubectl apply -n istio-io-tcp-traffic-shifting -f": () => expectAllOnV1(probes),
  });
  await expectSplit8020(probes, "80/20");
  // The namespace stays for "Through a traffic shift" (shiftHold), which deletes it.
}

async function expectPorts(answers: [boolean, boolean, boolean], what: string): Promise<void> {
  const ip = JSON.parse(
    await kubectl("get", "pod", "-n", "istio-tcp-authz", "-l", "app=tcp-echo", "-o", "json"),
  )
    .items[0].status.podIP;
  await eventually(60_000, async () => {
    const targets = ["tcp-echo:9000", "tcp-echo:9001", `${ip}:9002`];
    for (const [i, target] of targets.entries()) {
      const summary = await probeInMesh("istio-tcp-authz", "client", target, [
        "--prefix",
        "hello",
        "--count",
        "3",
      ]);
      const answered = summary.succeeded === summary.connections;
      const refused = summary.succeeded === 0;
      if (answers[i] ? !answered : !refused) {
        throw new Error(
          `${what}: ${target} should ${answers[i] ? "answer" : "be refused"}: ${
            JSON.stringify(summary)
          }`,
        );
      }
    }
  });
}

async function authorizationWalkthrough({ walkthroughs }: Context): Promise<void> {
  let previous: string | undefined;
  const hooks: Record<string, () => Promise<void>> = {
    "for target in": () => expectPorts([true, true, true], "no policy"),
  };
  for (const command of Object.keys(AUTHORIZATION_STEPS)) {
    const before = previous;
    hooks[command] = () =>
      before ? expectPorts(AUTHORIZATION_STEPS[before], before) : Promise.resolve();
    previous = command;
  }
  await runSection(
    walkthroughs,
    "## Istio's Authorization for TCP traffic task, with this image",
    hooks,
  );
  await expectPorts(AUTHORIZATION_STEPS[previous!], previous!);
}

const AMBIENT = "tcp-echo-ambient";

/** Probes from the ambient kit's two clients; who answers as `AMBIENT_STEPS` says. */
async function expectAmbient(answers: [boolean, boolean, boolean], what: string): Promise<void> {
  const probes: [string, string][] = [
    ["deploy/client", "tcp-echo:3333"],
    ["deploy/client", "tcp-echo:3334"],
    ["deploy/stranger", "tcp-echo:3333"],
  ];
  await eventually(60_000, async () => {
    for (const [i, [from, target]] of probes.entries()) {
      const summary = await probeInMesh(AMBIENT, from, target, ["--count", "3"], "client");
      const answered = summary.succeeded === summary.connections;
      const refused = summary.succeeded === 0;
      if (answers[i] ? !answered : !refused) {
        throw new Error(
          `${what}: ${from} → ${target} should ${answers[i] ? "answer" : "be refused"}: ${
            JSON.stringify(summary)
          }`,
        );
      }
    }
  });
}

/** The pod IPs of the pods `selector` picks in the ambient namespace. */
async function podIps(selector: string): Promise<string[]> {
  const pods = JSON.parse(
    await kubectl("get", "pods", "-n", AMBIENT, "-l", selector, "-o", "json"),
  );
  return pods.items.map((pod: { status: { podIP: string } }) => pod.status.podIP);
}

/**
 * Probes from `deploy/client` and returns the client addresses (without the
 * port) of the open records the servers logged meanwhile.
 */
async function addressesSeen(): Promise<Set<string>> {
  const since = new Date(Date.now() - 1_000).toISOString();
  const summary = await probeInMesh(AMBIENT, "deploy/client", "tcp-echo:3333", [
    "--count",
    "5",
  ], "client");
  if (summary.succeeded !== 5) throw new Error(`client → 3333: ${JSON.stringify(summary)}`);
  // With a selector kubectl logs shows each pod's last 10 lines unless --tail says otherwise.
  const logs = await kubectl(
    "logs",
    "-n",
    AMBIENT,
    "-l",
    "app=tcp-echo",
    "--tail=-1",
    `--since-time=${since}`,
  );
  const seen = new Set<string>();
  for (const [, address] of logs.matchAll(/TCP connection open\. client=(\S+):\d+ /g)) {
    seen.add(address.replace(/^\[|\]$/g, ""));
  }
  return seen;
}

/** Every address the servers saw is one of `expected` (and there was one). */
async function expectAddresses(expected: string[], what: string): Promise<void> {
  await eventually(30_000, async () => {
    const seen = [...await addressesSeen()];
    if (seen.length === 0 || seen.some((address) => !expected.includes(address))) {
      throw new Error(
        `${what}: the servers saw ${seen.join(", ")}, expected ${expected.join(", ")}`,
      );
    }
    console.log(`  ${what}: the servers saw ${seen.join(", ")}`);
  });
}

async function ambientWalkthrough({ walkthroughs }: Context): Promise<void> {
  const section = "## Ambient mode: L4 policy, a waypoint and an 80/20 TCPRoute";
  let previous: string | undefined;
  const hooks: Record<string, () => Promise<void>> = {
    "kubectl get pods -n tcp-echo-ambient -o wide": async () => {
      await expectAmbient([true, true, true], "no policy");
      await expectAddresses(await podIps("app=tcp-echo-client"), "without a waypoint");
    },
  };
  for (const command of Object.keys(AMBIENT_STEPS)) {
    const before = previous;
    hooks[command] = () =>
      before ? expectAmbient(AMBIENT_STEPS[before], before) : Promise.resolve();
    previous = command;
  }
  await runSection(walkthroughs, section, hooks);
  const probes = 200;
  const { low, high } = binomialBounds(probes, 0.2, 0.001);
  await eventually(90_000, async () => {
    const summary = await probeInMesh(AMBIENT, "deploy/client", "tcp-echo:3333", [
      "--count",
      String(probes),
    ], "client");
    const two = summary.versions.v2 ?? 0;
    if ((summary.versions.v1 ?? 0) + two !== probes || two < low || two > high) {
      throw new Error(
        `80/20: ${JSON.stringify(summary)}, v2 share must be ${low}..${high} of ${probes}`,
      );
    }
    console.log(`  80/20 through the waypoint: v2 answered ${two} of ${probes} (${low}..${high})`);
  });
  await expectAddresses(
    await podIps("gateway.networking.k8s.io/gateway-name=waypoint"),
    "through the waypoint",
  );
  // The namespace stays for "Through a ztunnel restart" (ztunnelHold), which deletes it.
}

// ---------------------------------------------------------------------------
// What happens to open connections: holds judged from their --json reports
// ---------------------------------------------------------------------------

/**
 * The page's `sleep N && CHANGE &` starts just before its hold (or its UDP
 * flow): the change comes up to this much earlier than N s into the hold
 * (kubectl exec and the client's start).
 */
const HOLD_START_SLACK_MS = 3_000;

/**
 * Runs a subsection of "What happens to open connections" (its hold runs
 * with `--json`, e2e/walkthroughs.ts) and returns the hold's report and the
 * change made while it ran.
 */
async function runHoldSection(
  page: string,
  section: typeof WALKTHROUGH_SECTIONS[number],
  hooks: Record<string, () => Promise<void>> = {},
): Promise<{ report: HoldReport; change: DelayedChange }> {
  const change = delayedChange(sectionCommands(page, section));
  const file = `${repoDir}${HOLD_REPORT_FILE}`;
  await Deno.remove(file).catch(() => {});
  try {
    await runSection(page, section, hooks);
    const report = parseHoldReport(await Deno.readTextFile(file));
    for (const line of holdSummary(report)) console.log(`  ${line}`);
    return { report, change };
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

/** Fails with every way the hold differs from what the page says (none: it is as stated). */
function expectJudged(section: string, failures: readonly string[]): void {
  if (failures.length > 0) throw new Error(`${section}:\n  ${failures.join("\n  ")}`);
}

async function rolloutHold({ walkthroughs }: Context): Promise<void> {
  const section = "### Through a rollout restart";
  const manifest = await Deno.readTextFile(`${repoDir}k8s/base/deployment.yml`);
  const drain = drainMs(
    parseAllDocuments(manifest).map((document) => document.toJS()),
    "tcp-echo-v1",
  );
  const { report, change } = await runHoldSection(walkthroughs, section);
  expectJudged(
    section,
    judgeRolloutHold(report, {
      version: "v1",
      notBeforeMs: change.delayMs - HOLD_START_SLACK_MS + drain,
    }),
  );
}

/**
 * How long past the 80/20 route the held connections must stay open: a
 * third of Istio's default drainDuration (45 s), after which the gateway's
 * Envoy may close what its old filter chain holds.
 */
const SHIFT_HELD_FOR_MS = 15_000;

async function shiftHold({ walkthroughs }: Context): Promise<void> {
  const section = "### Through a traffic shift";
  const probes = 200;
  const change = delayedChange(sectionCommands(walkthroughs, section));
  // New connections while the hold runs, once the route has had time to arrive; never rejects.
  let splitWhileHeld: Promise<Error | undefined> = Promise.resolve(undefined);
  await using _ingress = await portForward("service/istio-ingressgateway", "istio-system", [
    "31400",
  ]);
  try {
    const { report } = await runHoldSection(walkthroughs, section, {
      // The hold must open while everything goes to v1: the kit's route, restored, in place.
      "sleep ": () => expectAllOnV1(probes),
      [HOLD_COMMANDS.shift]: () => {
        splitWhileHeld = (async () => {
          await new Promise((resolve) => setTimeout(resolve, change.delayMs + 5_000));
          await expectSplit8020(probes, "80/20 of new connections while the hold runs");
        })().then(() => undefined, (error: Error) => error);
        return Promise.resolve();
      },
    });
    expectJudged(
      section,
      judgeShiftHold(report, { version: "v1", openUntilMs: change.delayMs + SHIFT_HELD_FOR_MS }),
    );
    const error = await splitWhileHeld;
    if (error !== undefined) throw error;
  } finally {
    await splitWhileHeld;
  }
  await kubectl("delete", "namespace", "istio-io-tcp-traffic-shifting", "--wait=false");
}

/** The old ztunnel goes on serving what it holds through its drain: at least this long. */
const ZTUNNEL_SERVES_AT_LEAST_MS = 10_000;

async function ztunnelHold({ walkthroughs }: Context): Promise<void> {
  const section = "### Through a ztunnel restart";
  const { report, change } = await runHoldSection(walkthroughs, section);
  expectJudged(
    section,
    judgeProxyRestartHold(report, {
      notBeforeMs: change.delayMs - HOLD_START_SLACK_MS + ZTUNNEL_SERVES_AT_LEAST_MS,
    }),
  );
  await kubectl("delete", "-k", "k8s/istio-ambient", "--ignore-not-found", "--wait=false");
}

// ---------------------------------------------------------------------------
// UDP in a mesh, and both families on a dual-stack cluster
// ---------------------------------------------------------------------------

/** Removes the `--json` reports a section's replaced commands leave, before it runs. */
async function removeReports(...files: string[]): Promise<void> {
  for (const file of files) await Deno.remove(`${repoDir}${file}`).catch(() => {});
}

/** The `--json` report a replaced command of the page left in `file` (REPORT_FILES), taken. */
async function takeReport(file: string): Promise<string> {
  const path = `${repoDir}${file}`;
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`the page's command left no report in ${file}: ${(error as Error).message}`);
  } finally {
    await Deno.remove(path).catch(() => {});
  }
}

/** The servers' open records (app=tcp-echo, current context) since `since`, an ISO time. */
async function openRecordsSince(since: string, container?: string) {
  const args = ["logs", "-l", "app=tcp-echo", "--tail=-1", `--since-time=${since}`, "--prefix"];
  return parseOpenRecords(await kubectl(...args, ...(container ? ["-c", container] : [])));
}

/** A pod's addresses, `status.podIPs`, as the API lists them. */
function podIpsOf(pod: { status: { podIPs?: { ip: string }[] } }): string[] {
  return (pod.status.podIPs ?? []).map(({ ip }) => ip);
}

/**
 * Before the page's `kubectl logs`: the two probes from `udp-client` were
 * answered in full, and the servers' records of them name the client pod for
 * every UDP flow and the sidecar for every TCP connection.
 */
async function expectMeshRecords(since: string): Promise<void> {
  const tcp = parseProbeCounts(await takeReport(REPORT_FILES.meshTcp));
  const udp = parseProbeCounts(await takeReport(REPORT_FILES.meshUdp));
  expectJudged("the probes from udp-client", [
    ...judgeAllAnswered(tcp, { transport: "tcp", count: countOf(UDP_COMMANDS.tcp) }, "TCP"),
    ...judgeAllAnswered(udp, { transport: "udp", count: countOf(UDP_COMMANDS.udp) }, "UDP"),
  ]);
  const clientIp = (await kubectl("get", "pod", "udp-client", "-o", "jsonpath={.status.podIP}"))
    .trim();
  const count = Math.min(countOf(UDP_COMMANDS.tcp), countOf(UDP_COMMANDS.udp));
  // The server's log sink writes in batches: the records come within moments.
  await eventually(15_000, async () => {
    const records = await openRecordsSince(since, "tcp-echo-container");
    expectJudged("the servers' records", judgeMeshRecords(records, { clientIp, count }));
    console.log(
      `  records: UDP flows from ${clientIp} (udp-client), TCP connections from the sidecar`,
    );
  });
}

async function udpMeshWalkthrough({ walkthroughs }: Context): Promise<void> {
  const section = UDP_MESH_SECTION;
  const change = delayedChange(sectionCommands(walkthroughs, section));
  const manifest = await Deno.readTextFile(`${repoDir}k8s/base/deployment.yml`);
  const documents = parseAllDocuments(manifest).map((document) => document.toJS());
  const graceMs = Math.max(
    ...["tcp-echo-v1", "tcp-echo-v2"].map((name) => terminationGraceMs(documents, name)),
  );
  await removeReports(REPORT_FILES.meshTcp, REPORT_FILES.meshUdp, REPORT_FILES.flow);
  let since = "";
  await runSection(walkthroughs, section, {
    [UDP_COMMANDS.tcp]: () => {
      since = new Date(Date.now() - 1_000).toISOString();
      return Promise.resolve();
    },
    [UDP_COMMANDS.records]: () => expectMeshRecords(since),
  });
  const report = parseFlowReport(await takeReport(REPORT_FILES.flow));
  for (const { atMs, from, to, lostBetween } of report.changes) {
    console.log(
      `  flow: ${from} → ${to} at ${(atMs / 1_000).toFixed(1)} s, ` +
        `${lostBetween.length} lost in between; ${report.succeeded} of ${report.datagrams} echoed`,
    );
  }
  expectJudged(
    `${section}, a pod deleted under a flow`,
    judgeFlowThroughDelete(report, {
      notBeforeMs: change.delayMs - HOLD_START_SLACK_MS,
      notAfterMs: change.delayMs + graceMs + ENDPOINT_REMOVAL_MS,
    }),
  );
  const deleted = podOf(firstAnswer(report) ?? "");
  const left = (await kubectl("get", "pod", `${deleted}`, "-o", "json", "--ignore-not-found"))
    .trim();
  if (left !== "" && JSON.parse(left).metadata.deletionTimestamp === undefined) {
    throw new Error(`${section}: ${deleted}, which answered the flow first, was not deleted`);
  }
  await kubectl("delete", "pod", "udp-client", "--wait=false", "--ignore-not-found");
}

/**
 * A dual-stack kind cluster needs IPv6 on the host, and on Docker's network
 * `kind` (every kind cluster shares it; kind creates it with an IPv6 subnet,
 * or without one where Docker refuses).
 */
async function expectIpv6(): Promise<void> {
  const disabled = await Deno.readTextFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
    .then((text) => text.trim(), () => "absent");
  if (disabled !== "0") {
    throw new Error(
      `IPv6 is off on this host (net.ipv6.conf.all.disable_ipv6: ${disabled}): the ` +
        "dual-stack kind cluster needs it",
    );
  }
  const network = await capture("docker", ["network", "inspect", "kind", "-f", "{{.EnableIPv6}}"]);
  if (network.trim() === "false") {
    throw new Error(
      "Docker's network kind has no IPv6 subnet, so a dual-stack kind cluster cannot start: " +
        "enable IPv6 in Docker, then remove the network (docker network rm kind) once no kind " +
        "cluster uses it, and kind makes it again with one",
    );
  }
}

/** A pod's banner on port 3333, read through a port-forward to it. */
async function bannerOf(pod: string): Promise<string> {
  await using _forward = await portForward(`pod/${pod}`, "default", ["13333:3333"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: 13333 });
  await conn.closeWrite();
  return decoder.decode(await new Response(conn.readable).arrayBuffer());
}

/** What the dual-stack section says of the Service and of its two probes' reports per family. */
async function judgeDualStackProbes(): Promise<string[]> {
  const service = JSON.parse(await kubectl("get", "service", "tcp-echo", "-o", "json"));
  const failures = judgeDualStackService(service);
  const clusterIps = byFamily(service.spec.clusterIPs ?? []);
  const probes = [
    ["tcp", DUAL_STACK_COMMANDS.tcp, REPORT_FILES.dualStackTcp],
    ["udp", DUAL_STACK_COMMANDS.udp, REPORT_FILES.dualStackUdp],
  ] as const;
  for (const [transport, command, file] of probes) {
    const reports = parseFamilyProbes(await takeReport(file));
    for (const family of ["IPv4", "IPv6"] as const) {
      failures.push(...judgeAllAnswered(reports[family], {
        transport,
        count: countOf(command),
        family,
        ...(clusterIps[family] === undefined ? {} : { address: clusterIps[family] }),
      }, `${transport.toUpperCase()} over ${family}`));
    }
  }
  return failures;
}

async function dualStackWalkthrough(
  { versions, image, tools, walkthroughs }: Context,
): Promise<void> {
  await expectIpv6();
  await run(`${tools}/kind`, [
    "create",
    "cluster",
    "--name",
    DUAL_STACK_CLUSTER,
    "--config",
    DUAL_STACK_KIND_CONFIG,
    "--image",
    versions.kindNodeImage,
    "--wait",
    "180s",
  ]);
  // kind made this cluster kubectl's current context: the page's commands and the checks below
  // run there (and, should a check fail, the diagnostics); this step comes last for that reason.
  await run(`${tools}/kind`, ["load", "docker-image", image, "--name", DUAL_STACK_CLUSTER]);
  await removeReports(REPORT_FILES.dualStackTcp, REPORT_FILES.dualStackUdp);
  let since = "";
  await runSection(walkthroughs, DUAL_STACK_SECTION, {
    [DUAL_STACK_COMMANDS.tcp]: () => {
      since = new Date(Date.now() - 1_000).toISOString();
      return Promise.resolve();
    },
  });
  expectJudged(`${DUAL_STACK_SECTION}: the Service and the probes`, await judgeDualStackProbes());
  const client = JSON.parse(await kubectl("get", "pod", "dual-client", "-o", "json"));
  const { IPv4, IPv6 } = byFamily(podIpsOf(client));
  if (IPv4 === undefined || IPv6 === undefined) {
    throw new Error(`dual-client's addresses are ${podIpsOf(client).join(", ")}: not one of each`);
  }
  const count = Math.min(countOf(DUAL_STACK_COMMANDS.tcp), countOf(DUAL_STACK_COMMANDS.udp));
  await eventually(15_000, async () => {
    const records = await openRecordsSince(since);
    expectJudged(
      `${DUAL_STACK_SECTION}: the servers' records`,
      judgeFamilyRecords(records, { clientIps: { IPv4, IPv6 }, count }),
    );
  });
  const pods = JSON.parse(await kubectl("get", "pods", "-l", "app=tcp-echo", "-o", "json")).items;
  const failures: string[] = [];
  for (const pod of pods) {
    const name = pod.metadata.name;
    failures.push(...judgeBannerAddresses(await bannerOf(name), podIpsOf(pod), name));
  }
  expectJudged(`${DUAL_STACK_SECTION}: the banners`, failures);
  console.log(
    `  both families answered over TCP and UDP; the records name dual-client's ` +
      `${IPv4} and ${IPv6}; every banner lists its pod's two addresses`,
  );
  await run(`${tools}/kind`, ["delete", "cluster", "--name", DUAL_STACK_CLUSTER]);
  await kubectl("config", "use-context", `kind-${CLUSTER}`);
}

// ---------------------------------------------------------------------------
// Tools, diagnostics, teardown
// ---------------------------------------------------------------------------

/** Downloads kind and istioctl at the pinned versions (once) into `dir`. */
async function installTools(versions: Versions, istio: IstioPin, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
  const download = async (url: string, to: string) => {
    if (await Deno.stat(to).then(() => true, () => false)) return;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    await Deno.writeFile(to, new Uint8Array(await response.arrayBuffer()), { mode: 0o755 });
  };
  await download(`https://kind.sigs.k8s.io/dl/${versions.kind}/kind-linux-${arch}`, `${dir}/kind`);
  // Each release's istioctl in a directory of its own: a run for another pin gets its own.
  const istioDir = `${dir}/istio-${istio.version}`;
  await Deno.mkdir(istioDir, { recursive: true });
  const tarball = `${istioDir}/istioctl.tar.gz`;
  await download(
    `https://github.com/istio/istio/releases/download/${istio.version}/istioctl-${istio.version}-linux-${arch}.tar.gz`,
    tarball,
  );
  await run("tar", ["-xzf", tarball, "-C", istioDir]);
  await Deno.copyFile(`${istioDir}/istioctl`, `${dir}/istioctl`);
}

/** What a maintainer needs when a step fails: pods, their descriptions and logs, events. */
async function diagnostics(): Promise<void> {
  const commands: string[][] = [
    ["get", "pods", "-A", "-o", "wide"],
    ["describe", "pods", "-A", "-l", "app"],
    ["logs", "-A", "-l", "app=tcp-echo", "--all-containers", "--tail=100", "--prefix"],
    ["get", "events", "-A", "--sort-by=.lastTimestamp"],
  ];
  for (const args of commands) {
    console.log(`\n----- kubectl ${args.join(" ")}`);
    console.log(await kubectl(...args).catch((error: Error) => error.message));
  }
}

async function teardown(tools: string): Promise<void> {
  await run("docker", ["rm", "-f", CONTAINER]).catch(() => {});
  for (const cluster of [CLUSTER, DUAL_STACK_CLUSTER]) {
    await run(`${tools}/kind`, ["delete", "cluster", "--name", cluster]).catch(() => {});
  }
}

const USAGE = `Usage: deno task e2e [--istio VERSION] [--keep]

The end-to-end suite on a kind cluster: builds the image from the Dockerfile,
checks the container, creates a kind cluster, installs Istio and the Gateway
API CRDs, runs every walkthrough of docs/walkthroughs.md as written and checks
each (the dual-stack one on a second, dual-stack kind cluster), then deletes
the clusters, also on failure. Needs Docker, kubectl, nc (netcat-openbsd),
network access for kind's and Istio's downloads, IPv6 enabled on the host, and
about 8 GB of memory. The versions are pinned in e2e/versions.json.

Options:
  --istio VERSION  which pinned Istio release to run against (default: the first)
  --keep           keep the clusters and the container afterwards, for a look
  -h, --help       print this text
`;

/** The image the kits name: the base's `images` entry (the published name and tag). */
async function kitImage(): Promise<string> {
  const kustomization = parseYaml(await Deno.readTextFile(`${repoDir}k8s/base/kustomization.yaml`));
  const [{ newName, newTag }] = kustomization.images;
  return `${newName}:${newTag}`;
}

async function main(): Promise<number> {
  const versions = parseVersions(await Deno.readTextFile(`${repoDir}e2e/versions.json`));
  let options;
  try {
    options = parseE2eArgs(Deno.args, versions);
  } catch (error) {
    console.error(`e2e: ${(error as Error).message}; see deno task e2e --help`);
    return 2;
  }
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const { istio } = options;
  const tools = `${repoDir}.e2e-tools`;
  const context: Context = {
    versions,
    istio,
    image: await kitImage(),
    tools,
    walkthroughs: await Deno.readTextFile(`${repoDir}${WALKTHROUGH_PAGE}`),
  };
  console.log(
    `e2e: kind ${versions.kind} (${
      versions.kindNodeImage.split("@")[0]
    }), Istio ${istio.version}, ` +
      `Gateway API ${versions.gatewayApi} ${istio.gatewayApiChannel}, image ${context.image}`,
  );
  let failed = false;
  try {
    await installTools(versions, istio, tools);
    for (const step of STEPS) {
      const started = performance.now();
      console.log(`\n▶ ${step.name}  (${step.proves})`);
      try {
        await step.run(context);
      } catch (error) {
        console.log(`✗ ${step.name}: ${(error as Error).message}`);
        if (step.name !== "image" && step.name !== "container") await diagnostics();
        failed = true;
        break;
      }
      console.log(`✓ ${step.name} (${((performance.now() - started) / 1_000).toFixed(0)} s)`);
    }
  } finally {
    if (!options.keep) await teardown(tools);
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
