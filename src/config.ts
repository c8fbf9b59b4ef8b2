/**
 * The server's configuration: one table with a row per environment
 * variable (name, default, parser, meaning), from which
 * {@linkcode loadConfig}, the positional `PORTS PREFIX` arguments and
 * `--help` and docs/configuration.md's table are built (a test holds the
 * page to it), so each default is written once, here.
 *
 * @module
 */
import ipaddr from "ipaddr.js";
import { type Cidr, parseCidr } from "./proxy_protocol.ts";
import {
  BANNER_FIELDS,
  type BannerField,
  type BannerKey,
  type BannerValues,
  DURATION_FORMS,
  parseDuration,
} from "./wire.ts";

/** Log levels accepted by `LOG_LEVEL`, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** A `LOG_LEVEL` value. */
export type LogLevelName = typeof LOG_LEVELS[number];

/** Record formats accepted by `LOG_FORMAT`. */
export const LOG_FORMATS = ["text", "json"] as const;
/** A `LOG_FORMAT` value. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Values of `PROXY_PROTOCOL`. */
export const PROXY_MODES = ["off", "v1", "v2", "any", "optional"] as const;
/** A `PROXY_PROTOCOL` value. */
export type ProxyMode = typeof PROXY_MODES[number];

/** Values of `BANNER_MODE`. */
export const BANNER_MODES = ["connect", "first-data", "off"] as const;
/** A `BANNER_MODE` value. */
export type BannerMode = typeof BANNER_MODES[number];

/** Values of `TLS_CLIENT_AUTH`. */
export const CLIENT_AUTH_MODES = ["optional", "require"] as const;
/** A `TLS_CLIENT_AUTH` value. */
export type ClientAuthMode = typeof CLIENT_AUTH_MODES[number];

/** The UDP part of the configuration. */
export interface UdpSettings {
  /** UDP echo ports; empty = none. */
  readonly ports: readonly number[];
  /** A peer silent this long has its flow closed. */
  readonly flowTimeoutMs: number;
  /** Flows tracked at most. */
  readonly maxFlows: number;
  /** The UDP faults: fractions from 0 to 1, and a delay. */
  readonly faults: {
    readonly dropFraction: number;
    readonly duplicateFraction: number;
    readonly reorderFraction: number;
    readonly delayMs: number;
  };
}

/** The TLS part of the configuration. */
export interface TlsSettings {
  /** Ports whose listeners speak TLS, then behave as the plain ones; empty = none. */
  readonly ports: readonly number[];
  /** PEM certificate (chain) file; with `keyFile`, else a certificate is generated. */
  readonly certFile: string | undefined;
  /** PEM private key file. */
  readonly keyFile: string | undefined;
  /** Names (DNS names or IP addresses) a generated certificate is for, besides the defaults. */
  readonly serverNames: readonly string[];
  /** ALPN protocols the server accepts, in preference order; empty = no ALPN. */
  readonly alpn: readonly string[];
  /** PEM file of the CA certificates client certificates must be issued by. */
  readonly clientCaFile: string | undefined;
  /** With a client CA: whether a client certificate is required. */
  readonly clientAuth: ClientAuthMode;
}

/** How often certificate files are read again to see whether they changed. */
export const TLS_RELOAD_INTERVAL_MS = 5_000;

/** Largest accepted `LOG_DATA_BYTES`: one full read buffer. */
export const MAX_LOG_DATA_BYTES = 65_536;

/** Largest accepted `MAX_CONNECTIONS`. */
export const MAX_CONNECTIONS_LIMIT = 1_000_000;

/** The banner's identity lines, as the environment sets them (the client address is per connection). */
export type BannerFields = Omit<
  BannerValues,
  "clientAddress" | "sourceIdentity" | "connectionId"
>;

/** The whole configuration, as the environment and arguments say it: built once, frozen. */
export interface Config {
  /** TCP ports to listen on, one listener each. */
  readonly ports: readonly number[];
  /** Listen address; `undefined` means dual-stack `::`, else `0.0.0.0`. */
  readonly host: string | undefined;
  /** The banner's identity lines. */
  readonly banner: BannerFields;
  /** The lowest level logged. */
  readonly logLevel: LogLevelName;
  /** How records are written. */
  readonly logFormat: LogFormat;
  /** Bytes of each received chunk shown in data records; 0 = no records. */
  readonly logDataBytes: number;
  /** How long open connections may go on after SIGTERM/SIGINT. */
  readonly shutdownGraceMs: number;
  /** Port of the HTTP admin server (health, readiness, metrics); `undefined` = off. */
  readonly adminPort: number | undefined;
  /** After a shutdown signal: how long readiness fails while still accepting. */
  readonly drainDelayMs: number;
  /** Open echo connections at most; 0 = unlimited. */
  readonly maxConnections: number;
  /**
   * Connections still in their TLS handshake or waiting for a PROXY header,
   * at most; while that many wait, the ports that have such a stage accept no
   * more (the plain ports go on). 0 = unlimited.
   */
  readonly maxPendingConnections: number;
  /** The memory limit connections are admitted within: the container's, none, or bytes. */
  readonly memoryLimit: "auto" | "off" | number;
  /** Close a connection on which no byte moved either way for this long; 0 = never. */
  readonly idleTimeoutMs: number;
  /** Add `Your address is IP:PORT.` to the banner. */
  readonly showClientAddress: boolean;
  /** Add `Connection id UUID.` to the banner. */
  readonly showConnectionId: boolean;
  /** Tell a connection that the shutdown closes it, in one line, before closing it. */
  readonly drainNotice: boolean;
  /** When the banner is sent: on connect, just before the first echo, or never. */
  readonly bannerMode: BannerMode;
  /** Which PROXY protocol headers connections must or may start with. */
  readonly proxyProtocol: ProxyMode;
  /** Peers allowed to send a PROXY header; `undefined` = any peer. */
  readonly proxyTrusted: readonly Cidr[] | undefined;
  /** Line mode: answer each line as `${prefix} ${line}`; `undefined` = byte-exact echo. */
  readonly echoPrefix: string | undefined;
  /** Fault: wait this long before each echo. */
  readonly echoDelayMs: number;
  /** Fault: close after echoing this many bytes (reason `fault`); 0 = never. */
  readonly closeAfterBytes: number;
  /** TLS ports and their certificates. */
  readonly tls: TlsSettings;
  /** UDP ports, their flows and faults. */
  readonly udp: UdpSettings;
}

/** The environment as `loadConfig` sees it: variable name to value. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** A configuration value that cannot be used; its message is one line. */
export class ConfigError extends Error {
  /** Names the error in a stack trace. */
  override name = "ConfigError";
}

/** One environment variable: its name, default, meaning, and how its value is read. */
export interface ConfigVariable<T = unknown> {
  /** The variable's name. */
  readonly name: string;
  /** The default as written in `--help` and docs/configuration.md: a value, or what its absence means. */
  readonly defaultText: string;
  /** Whether {@linkcode ConfigVariable.defaultText} is a value one could set (else it says what unset means). */
  readonly defaultIsValue: boolean;
  /** One line for `--help` and docs/configuration.md. */
  readonly meaning: string;
  /** The value `env` gives it, or its default. Throws {@linkcode ConfigError}. */
  read(env: Environment): T;
}

/** Reads a non-empty value; `undefined` when it is not allowed. */
type Parser<T> = (text: string) => T | undefined;

/**
 * A row of the table. `defaultValue` is written as a user would write it and
 * read by the same parser; without one, the variable is `undefined` when
 * unset and `unsetText` says what that means.
 */
function variable<T>(row: {
  name: string;
  defaultValue?: string;
  unsetText?: string;
  meaning: string;
  parse: Parser<T>;
  allowed: string;
  /** The value is used as written: not trimmed, and only an empty one is unset (banner text, a prefix). */
  untrimmed?: boolean;
  /** An empty value is a value, not "unset" (a prefix). */
  keepEmpty?: boolean;
}): ConfigVariable<T> {
  const { name, defaultValue, parse, allowed } = row;
  const fallback = defaultValue === undefined ? undefined : parse(defaultValue);
  if (defaultValue !== undefined && fallback === undefined) {
    throw new Error(`${name}: default ${defaultValue} does not parse`);
  }
  return {
    name,
    defaultText: defaultValue ?? row.unsetText ?? "unset",
    defaultIsValue: defaultValue !== undefined,
    meaning: row.meaning,
    read(env: Environment): T {
      const raw = env[name];
      const blank = row.untrimmed ? raw === "" : raw?.trim() === "";
      if (raw === undefined || (blank && !row.keepEmpty)) return fallback as T;
      const value = parse(row.untrimmed ? raw : raw.trim());
      if (value === undefined) {
        throw new ConfigError(`invalid ${name}=${JSON.stringify(raw)}: allowed: ${allowed}`);
      }
      return value;
    },
  };
}

const integer = (min: number, max: number): Parser<number> => (text) => {
  const value = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  return value >= min && value <= max ? value : undefined;
};

const choice = <T extends string>(choices: readonly T[]): Parser<T> => (text) => {
  const lower = text.toLowerCase();
  return (choices as readonly string[]).includes(lower) ? lower as T : undefined;
};

const parsePort = integer(1, 65_535);

const parsePortOrOff: Parser<number | "off"> = (text) =>
  text.toLowerCase() === "off" ? "off" : parsePort(text);

const parsePorts: Parser<number[]> = (text) => {
  const ports = text.split(",").map((part) => /^\d{1,5}$/.test(part.trim()) ? Number(part) : NaN);
  const valid = ports.every((port) => port >= 1 && port <= 65_535);
  return valid && new Set(ports).size === ports.length ? ports : undefined;
};

const parseHost: Parser<string> = (text) => {
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const isAddress = ipaddr.IPv4.isValidFourPartDecimal(host) || ipaddr.IPv6.isValid(host);
  return isAddress || host === "localhost" ? host : undefined;
};

const parseBoolean: Parser<boolean> = (text) => {
  const lower = text.toLowerCase();
  return lower === "true" ? true : lower === "false" ? false : undefined;
};

const parseRanges: Parser<Cidr[]> = (text) => {
  const ranges = text.split(",").map(parseCidr);
  return ranges.every((range) => range !== undefined) ? ranges as Cidr[] : undefined;
};

const anyText: Parser<string> = (text) => text;

const duration = (name: string, defaultValue: string, meaning: string) =>
  variable({ name, defaultValue, meaning, parse: parseDuration, allowed: DURATION_FORMS });

const PORTS_ALLOWED = "an integer from 1 to 65535, or a comma list of different ones";

/** One row per banner variable, from the banner's field table. */
const bannerVariable = (field: BannerField) =>
  variable({
    name: field.variable!,
    meaning: `${BANNER_MEANINGS[field.key]}: the banner line "${
      field.template.replace("{}", "VALUE")
    }", as written; empty: no line`,
    parse: anyText,
    allowed: "any text",
    untrimmed: true,
  });

const BANNER_MEANINGS: Readonly<Record<BannerKey, string>> = {
  node: "node name",
  pod: "pod name",
  namespace: "namespace",
  ip: "pod IP address",
  ips: "the pod's addresses, both families (Downward API status.podIPs)",
  serviceAccount: "service account",
  version: "version",
  clientAddress: "",
  sourceIdentity: "",
  connectionId: "",
};

const TCP_PORT = variable({
  name: "TCP_PORT",
  defaultValue: "3333",
  meaning: "port to listen on, 1-65535, or a comma list (9000,9001): one listener each",
  parse: parsePorts,
  allowed: PORTS_ALLOWED,
});
const HOST = variable({
  name: "HOST",
  unsetText: "all interfaces",
  meaning:
    "listen address: an IP address, or localhost (127.0.0.1); unset: dual-stack :: where the host has IPv6, else 0.0.0.0",
  parse: parseHost,
  allowed: "an IPv4 or IPv6 address (0.0.0.0, ::, 127.0.0.1), or localhost",
});
const BANNER_VARIABLES = BANNER_FIELDS.filter((field) => field.variable !== undefined)
  .map((field) => [field.key, bannerVariable(field)] as const);
const LOG_LEVEL = variable({
  name: "LOG_LEVEL",
  defaultValue: "info",
  meaning: "the lowest level logged: debug, info, warn or error",
  parse: choice(LOG_LEVELS),
  allowed: LOG_LEVELS.join(", "),
});
const LOG_FORMAT = variable({
  name: "LOG_FORMAT",
  defaultValue: "text",
  meaning:
    "record format: text (go-echo's: date, time, connection id, message) or json (one object a line)",
  parse: choice(LOG_FORMATS),
  allowed: LOG_FORMATS.join(", "),
});
const LOG_DATA_BYTES = variable({
  name: "LOG_DATA_BYTES",
  defaultValue: "1024",
  meaning:
    `bytes of each received chunk shown in data records, 0-${MAX_LOG_DATA_BYTES}; 0 turns them off`,
  parse: integer(0, MAX_LOG_DATA_BYTES),
  allowed: `an integer from 0 to ${MAX_LOG_DATA_BYTES}`,
});
const SHUTDOWN_GRACE = duration(
  "SHUTDOWN_GRACE",
  "10s",
  "how long open connections may go on after SIGTERM/SIGINT (e.g. 500ms, 10s, 2m)",
);
const ADMIN_PORT = variable({
  name: "ADMIN_PORT",
  defaultValue: "8080",
  meaning: "HTTP port for /healthz, /readyz and /metrics, 1-65535; off: no admin server",
  parse: parsePortOrOff,
  allowed: "an integer from 1 to 65535, or off",
});
const DRAIN_DELAY = duration(
  "DRAIN_DELAY",
  "0s",
  "after SIGTERM/SIGINT: /readyz fails at once, accepting goes on this long",
);
const MAX_CONNECTIONS = variable({
  name: "MAX_CONNECTIONS",
  defaultValue: "10000",
  meaning: `open echo connections at most, 0-${MAX_CONNECTIONS_LIMIT}; 0 = unlimited`,
  parse: integer(0, MAX_CONNECTIONS_LIMIT),
  allowed: `an integer from 0 to ${MAX_CONNECTIONS_LIMIT}`,
});
const MAX_PENDING_CONNECTIONS = variable({
  name: "MAX_PENDING_CONNECTIONS",
  unsetText: "MAX_CONNECTIONS/4",
  meaning:
    `connections in their TLS handshake or awaiting a PROXY header at most, 0-${MAX_CONNECTIONS_LIMIT}; 0 = unlimited`,
  parse: integer(0, MAX_CONNECTIONS_LIMIT),
  allowed: `an integer from 0 to ${MAX_CONNECTIONS_LIMIT}`,
});

const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
};

/** A memory size as Kubernetes writes one (`268435456`, `256Mi`, `1G`), in bytes. */
export function parseMemorySize(text: string): number | undefined {
  const match = /^(\d{1,15})(|K|M|G|Ki|Mi|Gi)$/.exec(text);
  if (!match) return undefined;
  const bytes = Number(match[1]) * SIZE_UNITS[match[2]];
  return bytes >= 16 * 2 ** 20 ? bytes : undefined;
}

const MEMORY_LIMIT = variable({
  name: "MEMORY_LIMIT",
  defaultValue: "auto",
  meaning:
    "memory limit new connections are admitted within (reason memory past it): auto = the container's, off, or a size (256Mi)",
  parse: (text): "auto" | "off" | number | undefined => {
    const lower = text.toLowerCase();
    return lower === "auto" || lower === "off" ? lower : parseMemorySize(text);
  },
  allowed: "auto, off, or a size of at least 16Mi in bytes or with K, M, G, Ki, Mi, Gi (256Mi)",
});
const IDLE_TIMEOUT = duration(
  "IDLE_TIMEOUT",
  "0s",
  "close a connection on which no byte moved either way for this long; 0s = never",
);
const SHOW_CLIENT_ADDRESS = variable({
  name: "SHOW_CLIENT_ADDRESS",
  defaultValue: "false",
  meaning:
    "true adds the banner line Your address is IP:PORT. (the original client's behind a PROXY header)",
  parse: parseBoolean,
  allowed: "true, false",
});
const SHOW_CONNECTION_ID = variable({
  name: "SHOW_CONNECTION_ID",
  defaultValue: "false",
  meaning: "true adds the banner line Connection id UUID. (the id of the connection's log records)",
  parse: parseBoolean,
  allowed: "true, false",
});
const DRAIN_NOTICE = variable({
  name: "DRAIN_NOTICE",
  defaultValue: "false",
  meaning:
    "true: a connection still open when SHUTDOWN_GRACE ends is sent one line saying so, then closed",
  parse: parseBoolean,
  allowed: "true, false",
});
const BANNER_MODE = variable({
  name: "BANNER_MODE",
  defaultValue: "connect",
  meaning: "connect (on accept), first-data (just before the first echo) or off",
  parse: choice(BANNER_MODES),
  allowed: BANNER_MODES.join(", "),
});
const PROXY_PROTOCOL = variable({
  name: "PROXY_PROTOCOL",
  defaultValue: "off",
  meaning:
    "PROXY header on every connection: off, v1, v2, any (either version, required) or optional",
  parse: choice(PROXY_MODES),
  allowed: PROXY_MODES.join(", "),
});
const PROXY_PROTOCOL_TRUSTED = variable({
  name: "PROXY_PROTOCOL_TRUSTED",
  unsetText: "any peer",
  meaning: "comma list of addresses or CIDR ranges allowed to send a PROXY header",
  parse: parseRanges,
  allowed: "a comma list of IP addresses or CIDR ranges, e.g. 10.0.0.0/8,::1",
});
const ECHO_PREFIX = variable({
  name: "ECHO_PREFIX",
  meaning:
    "line mode: answer each line as PREFIX LINE (Istio's tcp-echo); set, even empty, turns it on",
  parse: anyText,
  allowed: "any text",
  untrimmed: true,
  keepEmpty: true,
});
const ECHO_DELAY = duration("ECHO_DELAY", "0s", "fault: wait this long before each echo");
const CLOSE_AFTER_BYTES = variable({
  name: "CLOSE_AFTER_BYTES",
  defaultValue: "0",
  meaning: "fault: close after echoing this many bytes (reason fault); 0 = never",
  parse: integer(0, 999_999_999),
  allowed: "an integer from 0 to 999999999",
});

const parseNames: Parser<string[]> = (text) => {
  const names = text.split(",").map((name) => name.trim());
  const valid = names.every((name) =>
    /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(name) ||
    parseHost(name) !== undefined
  );
  return valid ? names : undefined;
};

const parseProtocols: Parser<string[]> = (text) => {
  if (text.toLowerCase() === "off") return [];
  const protocols = text.split(",").map((protocol) => protocol.trim());
  return protocols.every((protocol) =>
      /^[\x21-\x7e]{1,255}$/.test(protocol) && !protocol.includes(",")
    )
    ? protocols
    : undefined;
};

const TLS_PORT = variable({
  name: "TLS_PORT",
  unsetText: "off",
  meaning: "TLS port, or a comma list: TLS handshake (after any PROXY header), then as TCP_PORT",
  parse: parsePorts,
  allowed: `${PORTS_ALLOWED}, none of them in TCP_PORT`,
});
const TLS_CERT_FILE = variable({
  name: "TLS_CERT_FILE",
  unsetText: "generated",
  meaning: `PEM certificate (chain, server's first) of the TLS ports, read again every ${
    TLS_RELOAD_INTERVAL_MS / 1_000
  } s; unset: a self-signed one is generated`,
  parse: anyText,
  allowed: "a file path",
});
const TLS_KEY_FILE = variable({
  name: "TLS_KEY_FILE",
  unsetText: "generated",
  meaning: "PEM private key of TLS_CERT_FILE",
  parse: anyText,
  allowed: "a file path",
});
const TLS_SERVER_NAMES = variable({
  name: "TLS_SERVER_NAMES",
  unsetText: "none",
  meaning:
    "comma list of names for the generated certificate, besides localhost, 127.0.0.1, ::1, POD_NAME and POD_IP",
  parse: parseNames,
  allowed: "a comma list of DNS names (*.example.com allowed) or IP addresses",
});
const TLS_ALPN = variable({
  name: "TLS_ALPN",
  defaultValue: "echo",
  meaning: "comma list of ALPN protocols TLS ports accept, first preferred; off = no ALPN",
  parse: parseProtocols,
  allowed: "a comma list of protocol names (printable ASCII), or off",
});
const TLS_CLIENT_CA = variable({
  name: "TLS_CLIENT_CA",
  unsetText: "off",
  meaning:
    "PEM CA certificates: TLS ports ask for a client certificate, which must be issued by one of them and in date",
  parse: anyText,
  allowed: "a file path",
});
const TLS_CLIENT_AUTH = variable({
  name: "TLS_CLIENT_AUTH",
  defaultValue: "optional",
  meaning: "with TLS_CLIENT_CA: optional (shown when given) or require",
  parse: choice(CLIENT_AUTH_MODES),
  allowed: CLIENT_AUTH_MODES.join(", "),
});

/** A fraction as `0.1` or `10%`, from 0 to 1. */
const parseFraction: Parser<number> = (text) => {
  const match = /^(\d{1,3}(?:\.\d{1,6})?)(%?)$/.exec(text);
  if (!match) return undefined;
  const value = Number(match[1]) / (match[2] ? 100 : 1);
  return value >= 0 && value <= 1 ? value : undefined;
};

const FRACTION_ALLOWED = "a fraction from 0 to 1, as 0.1 or 10%";

const UDP_PORT = variable({
  name: "UDP_PORT",
  unsetText: "off",
  meaning:
    "UDP echo port, or a comma list: each datagram answered with its bytes, a new peer's banner first",
  parse: parsePorts,
  allowed: PORTS_ALLOWED,
});
const UDP_FLOW_TIMEOUT = duration(
  "UDP_FLOW_TIMEOUT",
  "30s",
  "a UDP peer silent this long has its flow closed; its next datagram gets the banner again",
);
const UDP_MAX_FLOWS = variable({
  name: "UDP_MAX_FLOWS",
  defaultValue: "10000",
  meaning:
    `UDP flows (peers) tracked at most, 1-${MAX_CONNECTIONS_LIMIT}; new peers' datagrams are dropped past it`,
  parse: integer(1, MAX_CONNECTIONS_LIMIT),
  allowed: `an integer from 1 to ${MAX_CONNECTIONS_LIMIT}`,
});
const udpFault = (name: string, meaning: string) =>
  variable({ name, defaultValue: "0", meaning, parse: parseFraction, allowed: FRACTION_ALLOWED });
const UDP_DROP = udpFault("UDP_DROP", "fault: the share of UDP datagrams not echoed (0.1 or 10%)");
const UDP_DUPLICATE = udpFault("UDP_DUPLICATE", "fault: the share of UDP echoes sent twice");
const UDP_REORDER = udpFault(
  "UDP_REORDER",
  "fault: the share of UDP echoes held back and sent after the flow's next one",
);
const UDP_DELAY = duration("UDP_DELAY", "0s", "fault: wait this long before each UDP echo");

/** The UDP variables that mean nothing without `UDP_PORT`. */
const UDP_ONLY_VARIABLES = [
  UDP_FLOW_TIMEOUT,
  UDP_MAX_FLOWS,
  UDP_DROP,
  UDP_DUPLICATE,
  UDP_REORDER,
  UDP_DELAY,
];

/** The UDP variables, checked together: UDP_PORT is needed by the rest. */
function readUdp(env: Environment): UdpSettings {
  const ports = UDP_PORT.read(env) ?? [];
  if (ports.length === 0) {
    const stray = UDP_ONLY_VARIABLES.map((v) => v.name).find((name) => env[name]?.trim());
    if (stray !== undefined) {
      throw new ConfigError(`${stray} is set but UDP_PORT is not: allowed: set UDP_PORT too`);
    }
  }
  return Object.freeze({
    ports: Object.freeze(ports),
    flowTimeoutMs: UDP_FLOW_TIMEOUT.read(env),
    maxFlows: UDP_MAX_FLOWS.read(env),
    faults: Object.freeze({
      dropFraction: UDP_DROP.read(env),
      duplicateFraction: UDP_DUPLICATE.read(env),
      reorderFraction: UDP_REORDER.read(env),
      delayMs: UDP_DELAY.read(env),
    }),
  });
}

/** The TLS variables, checked together: TLS_PORT is needed by the rest, and so on. */
function readTls(env: Environment, plainPorts: readonly number[]): TlsSettings {
  const settings: TlsSettings = {
    ports: TLS_PORT.read(env) ?? [],
    certFile: TLS_CERT_FILE.read(env),
    keyFile: TLS_KEY_FILE.read(env),
    serverNames: TLS_SERVER_NAMES.read(env) ?? [],
    alpn: TLS_ALPN.read(env),
    clientCaFile: TLS_CLIENT_CA.read(env),
    clientAuth: TLS_CLIENT_AUTH.read(env),
  };
  const shared = settings.ports.filter((port) => plainPorts.includes(port));
  if (shared.length > 0) {
    throw new ConfigError(
      `invalid TLS_PORT=${JSON.stringify(env.TLS_PORT)}: port ${shared[0]} is also in TCP_PORT; ` +
        "allowed: ports not in TCP_PORT",
    );
  }
  if ((settings.certFile === undefined) !== (settings.keyFile === undefined)) {
    const missing = settings.certFile === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE";
    throw new ConfigError(
      `${missing} is unset: allowed: TLS_CERT_FILE and TLS_KEY_FILE both set, or both unset ` +
        "(a generated certificate)",
    );
  }
  if (env.TLS_CLIENT_AUTH?.trim() && settings.clientCaFile === undefined) {
    throw new ConfigError("TLS_CLIENT_AUTH needs TLS_CLIENT_CA: allowed: set TLS_CLIENT_CA too");
  }
  if (settings.ports.length === 0) {
    const stray = TLS_ONLY_VARIABLES.map((v) => v.name).find((name) => env[name]?.trim());
    if (stray !== undefined) {
      throw new ConfigError(`${stray} is set but TLS_PORT is not: allowed: set TLS_PORT too`);
    }
  }
  return Object.freeze({
    ...settings,
    ports: Object.freeze(settings.ports),
    serverNames: Object.freeze(settings.serverNames),
    alpn: Object.freeze(settings.alpn),
  });
}

/** The TLS variables that mean nothing without `TLS_PORT`. */
const TLS_ONLY_VARIABLES = [
  TLS_CERT_FILE,
  TLS_KEY_FILE,
  TLS_SERVER_NAMES,
  TLS_ALPN,
  TLS_CLIENT_CA,
  TLS_CLIENT_AUTH,
];

/**
 * Every environment variable the program reads, in `--help` order. It is the
 * source of `--help`, of {@linkcode loadConfig}, of the `--allow-env` list the
 * tests check against `deno.json`, and of docs/configuration.md's table.
 */
export const CONFIG_VARIABLES: readonly ConfigVariable[] = [
  TCP_PORT,
  HOST,
  ...BANNER_VARIABLES.map(([, row]) => row),
  LOG_LEVEL,
  LOG_FORMAT,
  LOG_DATA_BYTES,
  SHUTDOWN_GRACE,
  ADMIN_PORT,
  DRAIN_DELAY,
  MAX_CONNECTIONS,
  MAX_PENDING_CONNECTIONS,
  MEMORY_LIMIT,
  IDLE_TIMEOUT,
  SHOW_CLIENT_ADDRESS,
  SHOW_CONNECTION_ID,
  DRAIN_NOTICE,
  BANNER_MODE,
  PROXY_PROTOCOL,
  PROXY_PROTOCOL_TRUSTED,
  ECHO_PREFIX,
  ECHO_DELAY,
  CLOSE_AFTER_BYTES,
  TLS_PORT,
  ...TLS_ONLY_VARIABLES,
  UDP_PORT,
  ...UDP_ONLY_VARIABLES,
];

/**
 * Builds the frozen configuration from environment variables, validating
 * every value. Throws {@linkcode ConfigError} with a one-line message naming
 * the variable, its bad value and what is allowed.
 *
 * @example
 * ```ts
 * const config = loadConfig({ TCP_PORT: "4000", NODE_NAME: "EchoNode" });
 * ```
 */
export function loadConfig(env: Environment): Config {
  const adminPort = ADMIN_PORT.read(env);
  const ports = TCP_PORT.read(env);
  const maxConnections = MAX_CONNECTIONS.read(env);
  const banner = Object.fromEntries(
    BANNER_VARIABLES.map(([key, row]) => [key, row.read(env)]),
  ) as BannerFields;
  return Object.freeze({
    ports: Object.freeze(ports),
    host: HOST.read(env),
    banner: Object.freeze(banner),
    logLevel: LOG_LEVEL.read(env),
    logFormat: LOG_FORMAT.read(env),
    logDataBytes: LOG_DATA_BYTES.read(env),
    shutdownGraceMs: SHUTDOWN_GRACE.read(env),
    adminPort: adminPort === "off" ? undefined : adminPort,
    drainDelayMs: DRAIN_DELAY.read(env),
    maxConnections,
    maxPendingConnections: MAX_PENDING_CONNECTIONS.read(env) ??
      (maxConnections === 0 ? 0 : Math.ceil(maxConnections / 4)),
    memoryLimit: MEMORY_LIMIT.read(env),
    idleTimeoutMs: IDLE_TIMEOUT.read(env),
    showClientAddress: SHOW_CLIENT_ADDRESS.read(env),
    showConnectionId: SHOW_CONNECTION_ID.read(env),
    drainNotice: DRAIN_NOTICE.read(env),
    bannerMode: BANNER_MODE.read(env),
    proxyProtocol: PROXY_PROTOCOL.read(env),
    proxyTrusted: PROXY_PROTOCOL_TRUSTED.read(env),
    echoPrefix: ECHO_PREFIX.read(env),
    echoDelayMs: ECHO_DELAY.read(env),
    closeAfterBytes: CLOSE_AFTER_BYTES.read(env),
    tls: readTls(env, ports),
    udp: readUdp(env),
  });
}

/**
 * Applies positional arguments as Istio's tcp-echo server takes them:
 * `tcp-echo 9000,9001 hello` means `TCP_PORT=9000,9001 ECHO_PREFIX=hello`.
 * Arguments win over the environment. Throws {@linkcode ConfigError} for an
 * option it does not know.
 */
export function applyArguments(args: readonly string[], env: Environment): Environment {
  // After "--" every argument is positional; before it, PORTS never starts with "-" and
  // a PREFIX starting with "--" is far likelier a mistyped option.
  const separated = args[0] === "--";
  if (separated) args = args.slice(1);
  const option = separated
    ? undefined
    : args.find((arg, i) => arg.startsWith(i === 0 ? "-" : "--"));
  if (option !== undefined) {
    throw new ConfigError(
      `unknown option ${JSON.stringify(option)}: usage: tcp-echo [--help] [PORTS [PREFIX]]; ` +
        "everything else is set by environment variables, listed by --help",
    );
  }
  if (args.length > 2) {
    throw new ConfigError(
      `unexpected argument ${JSON.stringify(args[2])}: allowed: [PORTS [PREFIX]]; see --help`,
    );
  }
  const [ports, prefix] = args;
  return {
    ...env,
    ...(ports === undefined ? {} : { TCP_PORT: ports }),
    ...(prefix === undefined ? {} : { ECHO_PREFIX: prefix }),
  };
}

/**
 * A repeat of the first shutdown signal this soon is the same event arriving
 * twice: Ctrl-C signals the whole process group and `deno task` forwards it too.
 */
export const REPEATED_SIGNAL_WINDOW_MS = 500;

/**
 * The configuration reference of docs/configuration.md: every variable with
 * its default and meaning, as a Markdown table, in the words of `--help`.
 */
export function renderConfigurationTable(): string {
  const cell = (text: string) => text.replaceAll("|", "\\|");
  const rows = CONFIG_VARIABLES.map((v) =>
    `| \`${v.name}\` | ${v.defaultIsValue ? `\`${v.defaultText}\`` : cell(v.defaultText)} | ${
      cell(v.meaning)
    } |`
  );
  return ["| Variable | Default | Meaning |", "| --- | --- | --- |", ...rows].join("\n") + "\n";
}

/** Renders the `--help` text: usage and the table of variables. */
export function renderHelp(): string {
  const width = Math.max(...CONFIG_VARIABLES.map((v) => v.name.length));
  const defaultWidth = Math.max(...CONFIG_VARIABLES.map((v) => v.defaultText.length));
  const rows = CONFIG_VARIABLES.map((v) =>
    `  ${v.name.padEnd(width)}  ${v.defaultText.padEnd(defaultWidth)}  ${v.meaning}`
  );
  return [
    "tcp-echo: a TCP echo server that says which node, pod and version answered.",
    "",
    "Usage: tcp-echo [--help] [PORTS [PREFIX]]",
    "       tcp-echo client HOST:PORT [probe|load|hold] [options]   (see tcp-echo client --help)",
    "",
    "PORTS and PREFIX, as Istio's tcp-echo takes them, set TCP_PORT and ECHO_PREFIX.",
    "",
    "Configuration is read from environment variables:",
    `  ${"VARIABLE".padEnd(width)}  ${"DEFAULT".padEnd(defaultWidth)}  MEANING`,
    ...rows,
    "",
    "Logs go to standard output, one record per line. SIGTERM or SIGINT stops",
    "accepting, lets open connections finish for SHUTDOWN_GRACE, then exits 0;",
    `a second one (${REPEATED_SIGNAL_WINDOW_MS} ms or more after the first) exits at once.`,
    "",
  ].join("\n");
}

/** Reads exactly the variables in {@linkcode CONFIG_VARIABLES} (all `--allow-env` grants). */
export function readEnvironment(): Environment {
  return Object.fromEntries(CONFIG_VARIABLES.map(({ name }) => [name, readVariable(name)]));
}

function readVariable(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (error) {
    if (!(error instanceof Deno.errors.InvalidData)) throw error;
    throw new ConfigError(`invalid ${name}: not valid UTF-8; allowed: UTF-8 text`);
  }
}
