/**
 * Tests of the Grafana dashboard (tcp-echo-dashboard.json) against the server
 * it shows: the JSON is one importable dashboard whose panels all read one
 * Prometheus data source and honour the Namespace and Pod variables; every
 * query names only metrics and labels a real server's /metrics exports (plus
 * the few labels Prometheus adds when it scrapes); every query runs in a real
 * Prometheus and returns series; and the kustomization renders the ConfigMap
 * Grafana's dashboard sidecar loads.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { ConfigMap } from "kubernetes-models/v1";
import {
  adminRequest,
  freePort,
  ignoreWithout,
  isClosedRecord,
  readExactly,
  readToEnd,
  repoDir,
  startTestServer,
  type TestServer,
  within,
} from "../../testing/support.ts";

// ---------------------------------------------------------------------------
// Types: the parts of a dashboard and of an exposition the checks read

/** A panel query, as Grafana's Prometheus data source stores it. */
interface Target {
  readonly refId?: string;
  readonly expr?: string;
  readonly legendFormat?: string;
  readonly datasource?: unknown;
}

/** A panel, or a row holding panels. */
interface Panel {
  readonly id?: number;
  readonly type?: string;
  readonly title?: string;
  readonly datasource?: unknown;
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
  readonly gridPos?: {
    readonly x: number;
    readonly y: number;
    readonly w: number;
    readonly h: number;
  };
}

/** A template variable. */
interface Variable {
  readonly name: string;
  readonly type: string;
  readonly query?: unknown;
  readonly datasource?: unknown;
  readonly includeAll?: boolean;
  readonly allValue?: string;
  readonly multi?: boolean;
}

/** The dashboard's top level, as far as the tests read it. */
interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly description: string;
  readonly schemaVersion: number;
  readonly time: { readonly from: string; readonly to: string };
  readonly refresh: string;
  readonly tags: readonly string[];
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly Variable[] };
}

/** What /metrics exports: each sample name, its family's type and the label names it carries. */
type Exposition = Map<string, { readonly type: string; readonly labels: Set<string> }>;

const DASHBOARD_FILE = "k8s/grafana/tcp-echo-dashboard.json";
const dashboardText = await Deno.readTextFile(`${repoDir}${DASHBOARD_FILE}`);

/** The one data source reference every panel, target and query variable uses. */
const DATASOURCE = { type: "prometheus", uid: "${datasource}" };

/**
 * Labels a query may use that tcp-echo does not export: Prometheus adds job
 * and instance to every target, and the usual kubernetes_sd relabeling of
 * pods adds namespace and pod (the dashboard's description says so).
 */
const SCRAPE_LABELS: ReadonlySet<string> = new Set(["job", "instance", "namespace", "pod"]);

/** The PromQL functions and aggregations the dashboard uses; any other is a typo here. */
const PROMQL_FUNCTIONS: ReadonlySet<string> = new Set([
  "sum",
  "count",
  "max",
  "rate",
  "histogram_quantile",
]);
const PROMQL_KEYWORDS: ReadonlySet<string> = new Set(["and", "or", "unless", "bool", "offset"]);

/** Grafana's own variables a query may use besides the dashboard's. */
const GRAFANA_VARIABLES: ReadonlySet<string> = new Set(["__rate_interval"]);

// ---------------------------------------------------------------------------
// Pure helpers: the exposition parser and the query check

const METRIC_NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const TYPE_LINE = new RegExp(`^# TYPE (${METRIC_NAME}) (counter|gauge|histogram)$`);
const HELP_LINE = new RegExp(`^# HELP ${METRIC_NAME} `);
const SAMPLE_LINE = new RegExp(`^(${METRIC_NAME})(?:\\{(.*)\\})? (\\S+)$`);
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)/y;
const HISTOGRAM_SUFFIXES = ["_bucket", "_sum", "_count"];

/** The label names of one sample's `{...}`; throws unless it is exactly `name="value"` pairs. */
function sampleLabels(text: string, line: string): string[] {
  const names: string[] = [];
  LABEL_PAIR.lastIndex = 0;
  while (LABEL_PAIR.lastIndex < text.length) {
    const match = LABEL_PAIR.exec(text);
    assert.ok(match, `unreadable labels in ${JSON.stringify(line)}`);
    names.push(match[1]);
  }
  return names;
}

/**
 * Reads Prometheus text format strictly: `# TYPE` before a family's samples,
 * each sample of the family just declared (a histogram's `_bucket`, `_sum`
 * and `_count`), labels as `name="value"` pairs, a numeric value.
 */
function parseExposition(text: string): Exposition {
  const exposition: Exposition = new Map();
  let family: { name: string; type: string } | undefined;
  for (const line of text.split("\n")) {
    if (line === "" || HELP_LINE.test(line)) continue;
    const type = TYPE_LINE.exec(line);
    if (type) {
      family = { name: type[1], type: type[2] };
      continue;
    }
    const sample = SAMPLE_LINE.exec(line);
    assert.ok(sample, `unreadable line ${JSON.stringify(line)}`);
    const [, name, labels = "", value] = sample;
    assert.ok(family, `${name} before any # TYPE`);
    const names = family.type === "histogram"
      ? HISTOGRAM_SUFFIXES.map((suffix) => family!.name + suffix)
      : [family.name];
    assert.ok(names.includes(name), `${name} is not a sample of ${family.type} ${family.name}`);
    assert.ok(!Number.isNaN(Number(value.replace(/^([+-])?Inf$/, "$1Infinity"))), line);
    const seen = exposition.get(name) ?? { type: family.type, labels: new Set<string>() };
    for (const label of sampleLabels(labels, line)) seen.labels.add(label);
    exposition.set(name, seen);
  }
  return exposition;
}

/** The label names of one selector's body, its values already blanked to `""`. */
function matcherLabels(body: string): string[] | undefined {
  const matchers = body.split(",").filter((matcher) => matcher.trim() !== "");
  const labels = matchers.map((matcher) =>
    /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*""\s*$/.exec(matcher)?.[1]
  );
  return labels.every((label) => label !== undefined) ? labels as string[] : undefined;
}

/**
 * What is wrong with one query against `exported`: each metric it names must
 * be a sample name /metrics exports; each label in a selector must be
 * exported on that metric; each label in `on(...)`/`ignoring(...)` on every
 * metric the query names; each label in `by`, `without`, `group_left`,
 * `group_right` and the legend on at least one; {@linkcode SCRAPE_LABELS}
 * count as exported everywhere. An empty list means the query is fine.
 */
function queryProblems(target: Target, exported: Exposition): string[] {
  const problems: string[] = [];
  const has = (metric: string, label: string) =>
    SCRAPE_LABELS.has(label) || (exported.get(metric)?.labels.has(label) ?? false);
  const grouped: { keyword: string; labels: string[] }[] = [];
  const metrics: string[] = [];
  const rest = (target.expr ?? "")
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(new RegExp(`(${METRIC_NAME})?\\s*\\{([^}]*)\\}`, "g"), (_, metric, body) => {
      const labels = matcherLabels(body);
      if (metric === undefined) problems.push(`a selector without a metric name: {${body}}`);
      else if (labels === undefined) problems.push(`unreadable selector ${metric}{${body}}`);
      else {
        const missing = labels.filter((label) => exported.has(metric) && !has(metric, label));
        for (const label of missing) problems.push(`${metric} has no label ${label}`);
      }
      return ` ${metric ?? ""} `;
    })
    .replace(/\[[^\]]*\]/g, " ")
    .replace(
      /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g,
      (_, keyword, list) => {
        grouped.push({
          keyword,
          labels: list.split(",").map((l: string) => l.trim()).filter(Boolean),
        });
        return " ";
      },
    )
    .replace(/\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b/gi, " ");
  for (const [, word, call] of rest.matchAll(new RegExp(`(${METRIC_NAME})(\\s*\\()?`, "g"))) {
    if (call) {
      if (!PROMQL_FUNCTIONS.has(word)) problems.push(`unknown function ${word}()`);
    } else if (!PROMQL_KEYWORDS.has(word)) {
      metrics.push(word);
      if (!exported.has(word)) problems.push(`${word} is not exported`);
    }
  }
  for (const { keyword, labels } of grouped) {
    const everyMetric = keyword === "on" || keyword === "ignoring";
    for (const label of labels) {
      const found = everyMetric
        ? metrics.every((metric) => has(metric, label))
        : metrics.some((metric) => has(metric, label));
      if (!found) problems.push(`${keyword}(${label}): not a label of ${metrics.join(", ")}`);
    }
  }
  for (const [, label] of (target.legendFormat ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    if (!metrics.some((metric) => has(metric, label))) {
      problems.push(`legend {{${label}}}: no such label`);
    }
  }
  return problems;
}

/** What is wrong with a query variable's `label_values(selector, label)`. */
function variableProblems(query: string, exported: Exposition): string[] {
  const match = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/.exec(query);
  if (!match) return [`not label_values(selector, label): ${query}`];
  return queryProblems({ expr: match[1], legendFormat: `{{${match[2]}}}` }, exported);
}

/** Every panel, rows' nested panels included. */
function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** The panels that query: every one but rows. */
function queryPanels(dashboard: Dashboard): Panel[] {
  return allPanels(dashboard.panels).filter((panel) => panel.type !== "row");
}

/** The query variables' queries, by variable name. */
function variableQueries(dashboard: Dashboard): [string, string][] {
  return dashboard.templating.list
    .filter((variable) => variable.type === "query")
    .map((variable) => [variable.name, String(variable.query)]);
}

/** `text` with each `$name` / `${name}` replaced by `values[name]`. */
function interpolate(text: string, values: Readonly<Record<string, string>>): string {
  return text.replace(/\$\{?(\w+)\}?/g, (_, name: string) => {
    assert.ok(name in values, `no value for $${name}`);
    return values[name];
  });
}

// ---------------------------------------------------------------------------
// I/O: a real server with traffic, and a real Prometheus

const SERVER_ENV = {
  ADMIN_PORT: "any",
  TLS_PORT: "any",
  NODE_NAME: "dashboard",
  // A limit, so that tcp_echo_memory_bytes has every kind the Memory panels show; a large one,
  // as the test runner's own resident size counts against it.
  MEMORY_LIMIT: "2Gi",
};
const BANNER = "Welcome, you are connected to node dashboard.\n";

/**
 * Puts one of each kind of connection through `s` (a plain one served to its
 * end, so the duration histogram has samples; a TLS one; one refused for
 * plaintext on the TLS port), closes them, and returns /metrics.
 */
async function scrapeAfterTraffic(s: TestServer): Promise<string> {
  const plain = await s.connect();
  try {
    await readExactly(plain, BANNER.length);
    await plain.closeWrite();
    await readToEnd(plain);
  } finally {
    plain.close();
  }
  await s.logs.waitFor(isClosedRecord(await s.connectionId(0)), "the plain connection closed");
  const tls = await s.connectTls({ insecure: true });
  try {
    await readExactly(tls, BANNER.length);
    const refused = await Deno.connect({ hostname: "127.0.0.1", port: s.tlsPort });
    try {
      await refused.write(new TextEncoder().encode("plaintext\n"));
      await readToEnd(refused);
    } finally {
      refused.close();
    }
    await s.logs.waitFor((r) => r.properties.reason === "tls_plaintext", "the refusal");
    return (await adminRequest(s.server.adminAddress!, "/metrics")).body;
  } finally {
    tls.close();
  }
}

/** A Prometheus on a free loopback port; dispose of it to stop it and delete its data. */
interface Prometheus extends AsyncDisposable {
  /** Runs an instant query; its result vector (throws on an error). */
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  /** GETs an API path; its `data`. */
  get(path: string): Promise<unknown>;
}

/** The `pod` labels the one test server is scraped under, as if it were two pods. */
const PODS = ["tcp-echo-v1-7c775f57c9-frprp", "tcp-echo-v2-5b8d6c7f4d-x2k9q"];

/**
 * Starts Prometheus scraping `adminPort` every second as two targets, each
 * with the labels kubernetes_sd relabeling gives a pod (namespace, pod, and
 * an instance of its own), and waits until each has been scraped 3 times.
 */
async function startPrometheus(adminPort: number): Promise<Prometheus> {
  const dir = await Deno.makeTempDir({ prefix: "tcp-echo-prometheus-" });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    JSON.stringify({
      global: { scrape_interval: "1s", scrape_timeout: "1s" },
      scrape_configs: [{
        job_name: "tcp-echo",
        static_configs: PODS.map((pod) => ({
          targets: [`127.0.0.1:${adminPort}`],
          labels: { namespace: "default", pod, instance: `${pod}:8080` },
        })),
      }],
    }),
  );
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log = new Response(child.stderr).text();
  const get = async (path: string, what = path) => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    const body = await response.json();
    assert.equal(body.status, "success", `${what}: ${body.error ?? JSON.stringify(body)}`);
    return body.data;
  };
  const prometheus: Prometheus = {
    get,
    query: async (expr) =>
      (await get(`/api/v1/query?query=${encodeURIComponent(expr)}`, expr)).result,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await log;
      await Deno.remove(dir, { recursive: true });
    },
  };
  try {
    await within(30_000, "Prometheus scraping", waitForScrapes(prometheus, child.status));
  } catch (error) {
    await prometheus[Symbol.asyncDispose]();
    throw new Error(`${error}; Prometheus said: ${await log}`);
  }
  return prometheus;
}

/** Polls until every target has 3 samples (two for a `rate`, one to spare). */
async function waitForScrapes(prometheus: Prometheus, exited: Promise<unknown>): Promise<void> {
  let gone = false;
  exited.then(() => gone = true, () => gone = true);
  while (!gone) {
    try {
      const counts = await prometheus.query("count_over_time(tcp_echo_build_info[1m])");
      if (counts.length === PODS.length && counts.every((c) => Number(c.value[1]) >= 3)) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error("Prometheus exited");
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("dashboard: the JSON is one Grafana 10/11 dashboard, importable as it is", async (t) => {
  const dashboard: Dashboard = JSON.parse(dashboardText);
  const panels = queryPanels(dashboard);
  await t.step("settings", () => {
    assert.equal(dashboard.uid, "tcp-echo");
    assert.equal(dashboard.title, "tcp-echo");
    assert.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion}`);
    assert.deepEqual(dashboard.time, { from: "now-1h", to: "now" });
    assert.equal(dashboard.refresh, "30s");
    assert.ok(dashboard.tags.includes("tcp-echo"));
    assert.match(dashboard.description, /namespace and pod/);
  });
  await t.step("every panel has a unique id, a title and a place on the 24-column grid", () => {
    const all = allPanels(dashboard.panels);
    const ids = all.map((panel) => panel.id);
    assert.ok(ids.every(Number.isInteger), "integer ids");
    assert.equal(new Set(ids).size, ids.length, `duplicate ids in ${ids}`);
    for (const panel of all) {
      assert.ok(panel.title?.trim(), `panel ${panel.id} has a title`);
      const grid = panel.gridPos;
      assert.ok(grid && grid.x >= 0 && grid.w > 0 && grid.x + grid.w <= 24, panel.title);
    }
  });
  await t.step("every panel queries, each target with its own refId and an expr", () => {
    for (const panel of panels) {
      const refIds = (panel.targets ?? []).map((target) => target.refId);
      assert.ok(refIds.length > 0, `${panel.title} has targets`);
      assert.ok(refIds.every((id) => typeof id === "string" && id !== ""), panel.title);
      assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: refIds ${refIds}`);
      for (const target of panel.targets!) assert.ok(target.expr?.trim(), panel.title);
    }
  });
  await t.step("one data source: the datasource variable, used by every panel and query", () => {
    const [variable] = dashboard.templating.list.filter((v) => v.type === "datasource");
    assert.deepEqual([variable?.name, variable?.query], ["datasource", "prometheus"]);
    for (const panel of panels) {
      assert.deepEqual(panel.datasource, DATASOURCE, panel.title);
      for (const target of panel.targets!) assert.deepEqual(target.datasource, DATASOURCE);
    }
    for (const v of dashboard.templating.list.filter((v) => v.type === "query")) {
      assert.deepEqual(v.datasource, DATASOURCE, v.name);
    }
  });
  await t.step("Namespace and Pod: optional regexes whose All matches a missing label", () => {
    for (const name of ["namespace", "pod"]) {
      const variable = dashboard.templating.list.find((v) => v.name === name);
      assert.ok(variable, name);
      assert.deepEqual(
        [variable.type, variable.includeAll, variable.multi, variable.allValue],
        ["query", true, true, ".*"],
        name,
      );
    }
  });
  await t.step("every selector filters by both variables; no undefined variable", () => {
    const defined = new Set(dashboard.templating.list.map((v) => v.name));
    const exprs = panels.flatMap((panel) => panel.targets!.map((target) => target.expr!));
    for (const expr of [...exprs, ...variableQueries(dashboard).map(([, query]) => query)]) {
      for (const [, name] of expr.matchAll(/\$\{?(\w+)\}?/g)) {
        assert.ok(defined.has(name) || GRAFANA_VARIABLES.has(name), `$${name} in ${expr}`);
      }
    }
    for (const expr of exprs) {
      for (const [, body] of expr.matchAll(/\{([^}]*)\}/g)) {
        assert.ok(body.includes('namespace=~"$namespace"'), `namespace filter in ${expr}`);
        assert.ok(body.includes('pod=~"$pod"'), `pod filter in ${expr}`);
      }
    }
  });
});

Deno.test("dashboard: every query names only metrics and labels a real server exports", async (t) => {
  const dashboard: Dashboard = JSON.parse(dashboardText);
  await using s = await startTestServer(SERVER_ENV);
  const exported = parseExposition(await scrapeAfterTraffic(s));
  await t.step("the scrape has a histogram's samples and TLS ports", () => {
    assert.ok(exported.get("tcp_echo_connection_duration_seconds_bucket")?.labels.has("le"));
    assert.deepEqual([...exported.get("tcp_echo_port_info")!.labels].sort(), ["port", "tls"]);
  });
  for (const panel of queryPanels(dashboard)) {
    await t.step(`panel "${panel.title}"`, () => {
      for (const target of panel.targets!) {
        assert.deepEqual(queryProblems(target, exported), [], `${target.refId}: ${target.expr}`);
      }
    });
  }
  for (const [name, query] of variableQueries(dashboard)) {
    await t.step(`variable $${name}`, () => {
      assert.deepEqual(variableProblems(query, exported), [], query);
    });
  }
});

Deno.test("dashboard: the query check fails on a metric, label or function /metrics lacks", async (t) => {
  const exported = parseExposition(
    [
      "# HELP tcp_echo_connections_active Echo connections open now.",
      "# TYPE tcp_echo_connections_active gauge",
      'tcp_echo_connections_active{port="3333"} 1',
      "# TYPE tcp_echo_port_info gauge",
      'tcp_echo_port_info{port="3333",tls="false"} 1',
      "# TYPE tcp_echo_connection_duration_seconds histogram",
      'tcp_echo_connection_duration_seconds_bucket{le="+Inf",port="3333"} 1',
      'tcp_echo_connection_duration_seconds_sum{port="3333"} 0.5',
      'tcp_echo_connection_duration_seconds_count{port="3333"} 1',
      "",
    ].join("\n"),
  );
  const active = 'tcp_echo_connections_active{pod=~"$pod"}';
  await t.step("a correct query passes", () => {
    const expr = `sum by (port, tls) (${active} * on(job, instance, port) group_left(tls) ` +
      `tcp_echo_port_info{tls="true"}) and histogram_quantile(0.5, sum by (le) ` +
      `(rate(tcp_echo_connection_duration_seconds_bucket[$__rate_interval])))`;
    assert.deepEqual(
      queryProblems({ expr, legendFormat: "{{port}} {{tls}} {{pod}}" }, exported),
      [],
    );
  });
  const cases: [string, Target, RegExp][] = [
    ["a misspelt metric", { expr: "sum(tcp_echo_connection_active)" }, /not exported/],
    ["a histogram's own name", { expr: "tcp_echo_connection_duration_seconds" }, /not exported/],
    ["a metric of another program", { expr: 'up{job="x"}' }, /up is not exported/],
    ["a selector label", { expr: 'tcp_echo_connections_active{stage="x"}' }, /no label stage/],
    ["a misspelt by label", { expr: `sum by (prot) (${active})` }, /by\(prot\)/],
    ["le off a bucket", { expr: `sum by (le) (${active})` }, /by\(le\)/],
    [
      "a group_left label",
      { expr: `${active} * on(port) group_left(tsl) tcp_echo_port_info` },
      /group_left\(tsl\)/,
    ],
    ["an on label one side lacks", { expr: `${active} * on(tls) tcp_echo_port_info` }, /on\(tls\)/],
    ["a legend label", { expr: active, legendFormat: "{{prot}}" }, /legend \{\{prot\}\}/],
    ["a misspelt function", { expr: `rtae(${active}[1m])` }, /unknown function rtae/],
    ["a bare selector", { expr: '{__name__="tcp_echo_connections_active"}' }, /without a metric/],
  ];
  for (const [what, target, problem] of cases) {
    await t.step(what, () => {
      const problems = queryProblems(target, exported);
      assert.ok(problems.some((p) => problem.test(p)), `${target.expr}: ${problems}`);
    });
  }
  await t.step("a malformed exposition line is refused", () => {
    assert.throws(() => parseExposition("# TYPE a gauge\na{port=3333} 1\n"), /unreadable/);
    assert.throws(() => parseExposition("# TYPE a gauge\nb 1\n"), /not a sample of/);
  });
});

Deno.test({
  name:
    "dashboard: every query runs in a real Prometheus and shows series, for All and for one pod",
  ignore: await ignoreWithout("prometheus", "running the dashboard's queries"),
  async fn(t) {
    const dashboard: Dashboard = JSON.parse(dashboardText);
    await using s = await startTestServer(SERVER_ENV);
    await scrapeAfterTraffic(s);
    await using prometheus = await startPrometheus(s.server.adminAddress!.port);
    const selections = { "All": ".*", "one pod": PODS[1] };
    for (const [selection, pod] of Object.entries(selections)) {
      const values = { namespace: ".*", pod, __rate_interval: "15s" };
      for (const panel of queryPanels(dashboard)) {
        await t.step(`${selection}: panel "${panel.title}"`, async () => {
          for (const target of panel.targets!) {
            const result = await prometheus.query(interpolate(target.expr!, values));
            assert.ok(result.length > 0, `${target.refId}: no series for ${target.expr}`);
          }
        });
      }
    }
    await t.step("the variables list the namespace and the pods", async () => {
      const values = { namespace: ".*" };
      const listed: Record<string, unknown> = {};
      for (const [name, query] of variableQueries(dashboard)) {
        const [, selector, label] = /^label_values\((.+),\s*(\w+)\)$/.exec(query)!;
        const match = encodeURIComponent(interpolate(selector, values));
        listed[name] = await prometheus.get(`/api/v1/label/${label}/values?match[]=${match}`);
      }
      assert.deepEqual(listed, { namespace: ["default"], pod: PODS });
    });
  },
});

Deno.test({
  name: "kustomize: k8s/grafana renders the dashboard as the ConfigMap Grafana's sidecar loads",
  ignore: await ignoreWithout("kubectl", "kustomize rendering"),
  async fn() {
    const output = await new Deno.Command("kubectl", {
      args: ["kustomize", "k8s/grafana"],
      cwd: repoDir,
      stdin: "null",
    }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    const manifests = parseAllDocuments(new TextDecoder().decode(output.stdout)).map((doc) => {
      assert.deepEqual(doc.errors, []);
      return doc.toJS();
    });
    assert.equal(manifests.length, 1);
    const [configMap] = manifests;
    new ConfigMap(configMap).validate();
    assert.deepEqual([configMap.apiVersion, configMap.kind], ["v1", "ConfigMap"]);
    assert.equal(configMap.metadata.name, "tcp-echo-dashboard", "no hash suffix");
    assert.equal(configMap.metadata.labels.grafana_dashboard, "1");
    assert.deepEqual(Object.keys(configMap.data), ["tcp-echo-dashboard.json"]);
    assert.equal(configMap.data["tcp-echo-dashboard.json"], dashboardText);
  },
});
