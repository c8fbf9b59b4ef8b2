/**
 * How the end-to-end suite runs the cluster walkthroughs of
 * docs/walkthroughs.md: every command is run as written, in a shell, except
 * those listed here, which name things a reader replaces (a pod's generated
 * name) or need what kind lacks (port 443 on a runner that is not root), or
 * wait where a reader would, or hold connections or probe what the suite
 * judges (it runs them with `--json` to judge what became of each connection
 * or datagram), or make a kind cluster (the suite makes it with its pinned
 * kind and node image). The suite reads the commands from the page when
 * it runs, so the two cannot drift; a test checks that every replacement
 * still matches a command of the page and that every command with a
 * placeholder has one.
 *
 * @module
 */

/** A command of the page that the suite runs differently, and why. */
export interface Replacement {
  /** What the suite runs instead; an empty string runs nothing. */
  readonly run: string;
  /** Why, as the step log says it. */
  readonly why: string;
}

const PORT_443 = "the gateway's 443 is port-forwarded to 127.0.0.1:8443: a runner that is not " +
  "root cannot listen on 443";

const POD_NAME = "the page's pod name is an example; the Deployment names the pod";

/**
 * Where a hold the suite runs leaves its `--json` report, from the
 * repository's directory (`.e2e-tools/` is git-ignored).
 */
export const HOLD_REPORT_FILE = ".e2e-tools/hold-report.json";

/**
 * Where the probes of "UDP in a mesh" and the dual-stack section leave their
 * `--json` reports, from the repository's directory.
 */
export const REPORT_FILES = {
  meshTcp: ".e2e-tools/udp-mesh-tcp.json",
  meshUdp: ".e2e-tools/udp-mesh-udp.json",
  flow: ".e2e-tools/udp-flow.json",
  dualStackTcp: ".e2e-tools/dual-stack-tcp.json",
  dualStackUdp: ".e2e-tools/dual-stack-udp.json",
} as const;

/**
 * A command run with `--json` into `file`, for the suite to judge (`judged`
 * says what, for the step log); `exit1`: why the page's command exits 1 and
 * that is as the page says (only 1 is let through).
 */
function withJson(command: string, file: string, judged: string, exit1?: string): Replacement {
  return {
    run: `${command} --json > ${file}${exit1 === undefined ? "" : " || test $? -eq 1"}`,
    why: `the suite judges ${judged} from the report's --json` +
      (exit1 === undefined ? "" : ` (exit 1: ${exit1})`),
  };
}

/**
 * A hold of "What happens to open connections", run with `--json` into
 * {@linkcode HOLD_REPORT_FILE}; `lossExpected`: the page's hold exits 1
 * because connections were lost, as the page says they are.
 */
function holdWithJson(command: string, lossExpected: boolean): Replacement {
  return withJson(
    command,
    HOLD_REPORT_FILE,
    "every held connection",
    lossExpected ? "connections were lost, as the page says" : undefined,
  );
}

/** The holds of "What happens to open connections", as the page writes them. */
export const HOLD_COMMANDS = {
  rollout: "kubectl exec client -c client -- /tcp-echo client tcp-echo:3333 hold " +
    "--connections 20 --duration 90s --reconnect",
  shift: "kubectl exec -n istio-io-tcp-traffic-shifting client -c client -- /tcp-echo client " +
    "istio-ingressgateway.istio-system:31400 hold --prefix one --connections 20 --duration 90s " +
    "--expect stays-on v1",
  ztunnel:
    "kubectl exec -n tcp-echo-ambient deploy/client -- /tcp-echo client tcp-echo:3333 hold " +
    "--connections 20 --duration 90s --reconnect",
} as const;

/** The probes of "UDP in a mesh", from the pod `udp-client`, as the page writes them. */
export const UDP_COMMANDS = {
  tcp: "kubectl exec udp-client -c udp-client -- /tcp-echo client tcp-echo:3333 --count 4",
  udp: "kubectl exec udp-client -c udp-client -- /tcp-echo client tcp-echo:3333 --udp --count 4",
  /** The page's look at the servers' open records of the two probes; the suite judges them first. */
  records: "kubectl logs -l app=tcp-echo -c tcp-echo-container --tail=-1 --since=1m --prefix " +
    '| grep -E "(TCP connection|UDP flow) open"',
  flow: "kubectl exec udp-client -c udp-client -- /tcp-echo client tcp-echo:3333 --udp " +
    "--one-flow --count 45 --interval 1s",
} as const;

/** The kind configuration of the dual-stack section: `networking.ipFamily: dual`. */
export const DUAL_STACK_KIND_CONFIG = "e2e/kind-dual-stack.yaml";

/** The dual-stack section's cluster and probes, from the pod `dual-client`, as the page writes them. */
export const DUAL_STACK_COMMANDS = {
  create: `kind create cluster --name tcp-echo-dual-stack --config ${DUAL_STACK_KIND_CONFIG}`,
  load: "kind load docker-image ghcr.io/tcp-echo/tcp-echo:0.1.0 --name tcp-echo-dual-stack",
  tcp: "kubectl exec dual-client -- /tcp-echo client tcp-echo:3333 -4 -6 --count 10",
  udp: "kubectl exec dual-client -- /tcp-echo client tcp-echo:3333 -4 -6 --udp --count 10",
} as const;

const OWN_CLUSTER = "the suite makes the dual-stack cluster itself, with the kind and node " +
  "image e2e/versions.json pins, under a name of its own, and deletes it at the end, also " +
  "on failure";

/** Command of the page → what the suite runs instead. */
export const REPLACEMENTS: Readonly<Record<string, Replacement>> = {
  "kubectl port-forward service/tcp-echo 3333 &": {
    run: "kubectl port-forward service/tcp-echo 3333 >/dev/null 2>&1 & " +
      "for i in $(seq 1 50); do nc -z localhost 3333 && break; sleep 0.2; done",
    why: "a reader types the next command once kubectl says it is forwarding: the suite " +
      "waits until the port accepts",
  },
  "openssl s_client -quiet -connect $INGRESS_HOST:443 -servername v2.example.com -alpn echo -CAfile tls.crt":
    {
      run:
        "openssl s_client -quiet -connect 127.0.0.1:8443 -servername v2.example.com -alpn echo -CAfile tls.crt",
      why: PORT_443,
    },
  "deno task client -- $INGRESS_HOST:443 --tls --sni v1.example.com --ca tls.crt --count 20": {
    run: "deno task client -- 127.0.0.1:8443 --tls --sni v1.example.com --ca tls.crt --count 20",
    why: PORT_443,
  },
  "deno task client -- $INGRESS_HOST:443 --tls --sni v2.example.com --ca tls.crt --count 20": {
    run: "deno task client -- 127.0.0.1:8443 --tls --sni v2.example.com --ca tls.crt --count 20",
    why: PORT_443,
  },
  "kubectl logs tcp-echo-v1-7c775f57c9-frprp -c tcp-echo-container | grep Received": {
    run: "kubectl logs deploy/tcp-echo-v1 -c tcp-echo-container | grep Received",
    why: POD_NAME,
  },
  "kubectl logs tcp-echo-v2-6bcfd7dcf4-2sqhf -c tcp-echo-container | grep Received": {
    run: "kubectl logs deploy/tcp-echo-v2 -c tcp-echo-container | grep Received",
    why: POD_NAME,
  },
  [HOLD_COMMANDS.rollout]: holdWithJson(HOLD_COMMANDS.rollout, true),
  [HOLD_COMMANDS.shift]: holdWithJson(HOLD_COMMANDS.shift, false),
  [HOLD_COMMANDS.ztunnel]: holdWithJson(HOLD_COMMANDS.ztunnel, true),
  [UDP_COMMANDS.tcp]: withJson(UDP_COMMANDS.tcp, REPORT_FILES.meshTcp, "who answered"),
  [UDP_COMMANDS.udp]: withJson(UDP_COMMANDS.udp, REPORT_FILES.meshUdp, "who answered"),
  [UDP_COMMANDS.flow]: withJson(
    UDP_COMMANDS.flow,
    REPORT_FILES.flow,
    "the flow's answers and losses",
    "datagrams were lost between the two pods' answers, which the page allows",
  ),
  [DUAL_STACK_COMMANDS.create]: { run: "", why: OWN_CLUSTER },
  [DUAL_STACK_COMMANDS.load]: {
    run: "",
    why: "the suite loads the image it built into its dual-stack cluster",
  },
  [DUAL_STACK_COMMANDS.tcp]: withJson(
    DUAL_STACK_COMMANDS.tcp,
    REPORT_FILES.dualStackTcp,
    "each family's report",
  ),
  [DUAL_STACK_COMMANDS.udp]: withJson(
    DUAL_STACK_COMMANDS.udp,
    REPORT_FILES.dualStackUdp,
    "each family's report",
  ),
};

/**
 * A command of the page that names something a reader must replace, needs
 * a load balancer (the page sets `INGRESS_HOST` outside the walkthroughs, and
 * the suite sets it to its port-forward), holds connections or follows one
 * flow (the suite reads what it saw from its `--json` report), or makes or
 * loads a kind cluster (the suite does, with the kind it pins).
 */
export function needsReplacement(command: string): boolean {
  return /REGISTRY|7c775f57c9|6bcfd7dcf4|\.\.\.|status\.loadBalancer|status\.addresses|\/tcp-echo client \S+ hold |--one-flow|^kind (create|load|delete) /
    .test(command);
}

/** What the suite runs for a command of the page: itself, or its replacement. */
export function commandToRun(command: string): Replacement {
  return REPLACEMENTS[command] ?? { run: command, why: "" };
}

/**
 * Commands whose input a reader types: the suite feeds them a line and stops
 * them after a few seconds, then checks what came back.
 */
export function interactiveInput(command: string): string | undefined {
  if (/^nc (\$INGRESS_HOST 3140[01]|localhost 3333)\b/.test(command)) return "hello, app1\n";
  if (/^openssl s_client /.test(command)) return "hello, app1\n";
  return undefined;
}

/** The authorization task's policy steps, in order, and which of 9000, 9001, 9002 answer after each. */
export const AUTHORIZATION_STEPS: Record<string, [boolean, boolean, boolean]> = {
  "kubectl apply -n istio-tcp-authz -f k8s/istio-tcp-authorization/tcp-policy-allow.yaml": [
    true,
    true,
    false,
  ],
  "kubectl apply -n istio-tcp-authz -f k8s/istio-tcp-authorization/tcp-policy-allow-http-only.yaml":
    [false, false, false],
  "kubectl apply -n istio-tcp-authz -f k8s/istio-tcp-authorization/tcp-policy-deny-http-only.yaml":
    [false, false, false],
  "kubectl apply -n istio-tcp-authz -f k8s/istio-tcp-authorization/tcp-policy-deny-port.yaml": [
    false,
    true,
    true,
  ],
};

/**
 * The ambient walkthrough's policy steps, in order, and which of client → 3333,
 * client → 3334 and stranger → 3333 answer after each (the page's table). The
 * last is checked before the policy is deleted.
 */
export const AMBIENT_STEPS: Record<string, [boolean, boolean, boolean]> = {
  "kubectl apply -n tcp-echo-ambient -f k8s/istio-ambient/policy-allow-client-3333.yaml": [
    true,
    false,
    false,
  ],
  "kubectl apply -n tcp-echo-ambient -f k8s/istio-ambient/policy-l7-without-waypoint.yaml": [
    false,
    false,
    false,
  ],
};
