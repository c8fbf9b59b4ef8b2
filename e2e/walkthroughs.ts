/**
 * How the end-to-end suite runs the README's cluster walkthroughs: every
 * command is run as written, in a shell, except those listed here, which
 * name things a reader replaces (a registry, a pod's generated name) or need
 * what kind lacks (a load balancer's address). The suite reads the commands
 * from README.md when it runs, so the two cannot drift; a test checks that
 * every replacement still matches a README command and that every command
 * with a placeholder has one.
 *
 * @module
 */

/** A README command the suite runs differently, and why. */
export interface Replacement {
  /** What the suite runs instead; an empty string runs nothing. */
  readonly run: string;
  /** Why, as the step log says it. */
  readonly why: string;
}

const NO_LOAD_BALANCER = "kind has no load balancer: the suite port-forwards the gateway to " +
  "127.0.0.1 and sets INGRESS_HOST to it";

const PORT_443 = "the gateway's 443 is port-forwarded to 127.0.0.1:8443: a runner that is not " +
  "root cannot listen on 443";

/** README command → what the suite runs instead. */
export const REPLACEMENTS: Readonly<Record<string, Replacement>> = {
  "export INGRESS_HOST=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{.status.loadBalancer.ingress[0].ip}')":
    { run: "", why: NO_LOAD_BALANCER },
  "export INGRESS_HOST=$(kubectl get gateways.gateway.networking.k8s.io tcp-echo-gateway -o jsonpath='{.status.addresses[0].value}')":
    { run: "", why: NO_LOAD_BALANCER },
  "export INGRESS_HOST=$(kubectl get gateways.gateway.networking.k8s.io tcp-echo-tls-gateway -o jsonpath='{.status.addresses[0].value}')":
    { run: "", why: NO_LOAD_BALANCER },
  "export INGRESS_HOST=...": { run: "", why: NO_LOAD_BALANCER },
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
    why: "the README's pod name is an example; the Deployment names the pod",
  },
  "kubectl logs tcp-echo-v2-6bcfd7dcf4-2sqhf -c tcp-echo-container | grep Received": {
    run: "kubectl logs deploy/tcp-echo-v2 -c tcp-echo-container | grep Received",
    why: "the README's pod name is an example; the Deployment names the pod",
  },
  "kubectl get pods --selector=app=tcp-echo": {
    run: "kubectl wait --for=condition=ready pod --selector=app=tcp-echo --timeout=180s && " +
      "kubectl get pods --selector=app=tcp-echo",
    why: "the README shows the pods running: the suite waits until they are",
  },
};

/** A README command that names something a reader must replace, or needs a load balancer. */
export function needsReplacement(command: string): boolean {
  return /REGISTRY|7c775f57c9|6bcfd7dcf4|\.\.\.|status\.loadBalancer|status\.addresses/.test(
    command,
  );
}

/** What the suite runs for a README command: itself, or its replacement. */
export function commandToRun(command: string): Replacement {
  return REPLACEMENTS[command] ?? { run: command, why: "" };
}

/**
 * Commands whose input a reader types: the suite feeds them a line and stops
 * them after a few seconds, then checks what came back.
 */
export function interactiveInput(command: string): string | undefined {
  if (/^nc \$INGRESS_HOST 3140[01]\b/.test(command)) return "hello, app1\n";
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
