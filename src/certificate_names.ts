/**
 * The names in an X.509 certificate, read from its DER: subject and issuer
 * as RFC 4514 strings, the subject alternative names, and the SPIFFE ID, for
 * the server and the client alike. Pure: no I/O, no crypto, no dependency
 * but ipaddr.js, so the client loads it too.
 *
 * node:crypto's `X509Certificate` (Deno 2.9.6) cannot be used for names: its
 * `subject` is `undefined` for an empty subject, throws "invalid attributes"
 * for BMPString and TeletexString values, shows a UniversalString as hex,
 * and puts one attribute per line, so a value with a newline in it reads as
 * two attributes.
 *
 * A name is written as RFC 4514 says, most significant RDN last (as LDAP,
 * Go's `pkix.Name.String`, Envoy's `x-forwarded-client-cert` and
 * `openssl -nameopt RFC2253` do; `openssl x509 -subject` and node print the
 * other way round): a subject `C=US, O=Acme, CN=web` in the DER reads
 * `CN=web,O=Acme,C=US`. Values are escaped as §2.4 requires, and no more:
 * a control character stays as it is (log output escapes it).
 *
 * @example
 * ```ts
 * declare const pem: string; // a certificate as PEM text
 * const names = readCertificateNames(derFromPem(pem));
 * names.subject; // "CN=a\\,O=forged,O=Acme"
 * names.spiffeId; // "spiffe://cluster.local/ns/default/sa/sleep"
 * certificateName(names); // the SPIFFE ID, else the subject
 * ```
 *
 * @module
 */
import ipaddr from "ipaddr.js";

/** A subject alternative name, labelled as OpenSSL and node label it (`DNS`, `IP Address`, `URI`…). */
export interface AltName {
  /** `DNS`, `email`, `URI`, `IP Address`, `DirName`, `Registered ID`, `othername`, `X400Name` or `EdiPartyName`. */
  readonly label: string;
  /** The name as text. */
  readonly value: string;
}

/** The names a certificate carries. */
export interface CertificateNames {
  /** The subject, RFC 4514; `""` when it is empty (a certificate named by its SANs only). */
  readonly subject: string;
  /** The issuer, RFC 4514. */
  readonly issuer: string;
  /** The subject's DER (to match it against another certificate's issuer). */
  readonly subjectDer: Uint8Array;
  /** The issuer's DER. */
  readonly issuerDer: Uint8Array;
  /** The subject alternative names, in certificate order. */
  readonly altNames: readonly AltName[];
  /** The first URI SAN that is a valid SPIFFE ID (as Istio and SPIRE issue them). */
  readonly spiffeId: string | undefined;
}

/** A certificate whose DER cannot be read; the message says where it went wrong. */
export class CertificateFormatError extends Error {
  /** Names the error in a stack trace. */
  override name = "CertificateFormatError";
}

// ---------------------------------------------------------------------------
// DER: just enough of X.690 for certificates
// ---------------------------------------------------------------------------

/** One DER element: its tag, where its contents start and where it ends. */
interface Element {
  readonly tag: number;
  readonly start: number;
  readonly contents: number;
  readonly end: number;
}

const TAG = {
  boolean: 0x01,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  numericString: 0x12,
  printableString: 0x13,
  teletexString: 0x14,
  ia5String: 0x16,
  visibleString: 0x1a,
  universalString: 0x1c,
  bmpString: 0x1e,
  sequence: 0x30,
  set: 0x31,
} as const;

/** Reads the element at `at`, which must end by `limit`. */
function element(der: Uint8Array, at: number, limit: number, what: string): Element {
  if (at + 2 > limit) throw new CertificateFormatError(`${what}: cut short at byte ${at}`);
  const tag = der[at];
  if ((tag & 0x1f) === 0x1f) throw new CertificateFormatError(`${what}: a multi-byte tag`);
  let length = der[at + 1];
  let contents = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) {
      throw new CertificateFormatError(`${what}: a length DER does not allow`);
    }
    if (contents + count > limit) throw new CertificateFormatError(`${what}: cut short`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[contents + i];
    contents += count;
  }
  const end = contents + length;
  if (end > limit) throw new CertificateFormatError(`${what}: longer than what holds it`);
  return { tag, start: at, contents, end };
}

/** The elements inside a constructed element. */
function children(der: Uint8Array, parent: Element, what: string): Element[] {
  const out: Element[] = [];
  for (let at = parent.contents; at < parent.end;) {
    const child = element(der, at, parent.end, what);
    out.push(child);
    at = child.end;
  }
  return out;
}

function expect(found: Element, tag: number, what: string): Element {
  if (found.tag !== tag) {
    throw new CertificateFormatError(`${what}: tag 0x${hexByte(found.tag)}, not 0x${hexByte(tag)}`);
  }
  return found;
}

function oidText(der: Uint8Array, oid: Element): string {
  const arcs: bigint[] = [];
  let arc = 0n;
  for (let i = oid.contents; i < oid.end; i++) {
    arc = (arc << 7n) | BigInt(der[i] & 0x7f);
    if ((der[i] & 0x80) === 0) {
      arcs.push(arc);
      arc = 0n;
    }
  }
  if (arcs.length === 0) throw new CertificateFormatError("an empty object identifier");
  const first = arcs[0] < 80n ? arcs[0] / 40n : 2n;
  return [first, arcs[0] - first * 40n, ...arcs.slice(1)].join(".");
}

function hexByte(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, hexByte).join("");
}

// ---------------------------------------------------------------------------
// Distinguished names (RFC 4514)
// ---------------------------------------------------------------------------

/**
 * Short names of attribute types: RFC 4514 §3's, and the few more that
 * certificates use often (`SERIALNUMBER` and `POSTALCODE` as Go writes them,
 * `emailAddress` as OpenSSL does). Any other type is written as its OID,
 * with its value as `#` and the hex of its DER (RFC 4514 §2.4).
 */
const SHORT_NAMES: Readonly<Record<string, string>> = {
  "2.5.4.3": "CN",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.6": "C",
  "2.5.4.9": "STREET",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
  "2.5.4.5": "SERIALNUMBER",
  "2.5.4.17": "POSTALCODE",
  "1.2.840.113549.1.9.1": "emailAddress",
};

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const UTF16BE = new TextDecoder("utf-16be", { fatal: true });

/**
 * A string value's text, or `undefined` when it is no string (or not a
 * valid one): UTF8String as UTF-8, BMPString as UTF-16, UniversalString as
 * UTF-32, TeletexString as Latin-1 (as OpenSSL and Go read it), the ASCII
 * types byte for byte.
 */
function stringValue(der: Uint8Array, value: Element): string | undefined {
  const bytes = der.subarray(value.contents, value.end);
  try {
    switch (value.tag) {
      case TAG.utf8String:
        return UTF8.decode(bytes);
      case TAG.bmpString:
        return bytes.length % 2 === 0 ? UTF16BE.decode(bytes) : undefined;
      case TAG.universalString: {
        if (bytes.length % 4 !== 0) return undefined;
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const points = Array.from({ length: bytes.length / 4 }, (_, i) => view.getUint32(i * 4));
        return String.fromCodePoint(...points);
      }
      case TAG.printableString:
      case TAG.ia5String:
      case TAG.numericString:
      case TAG.visibleString:
      case TAG.teletexString:
        return latin1(bytes);
      default:
        return undefined;
    }
  } catch {
    return undefined; // invalid UTF-8 or UTF-16, a code point past U+10FFFF
  }
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return text;
}

/**
 * Escapes an attribute value as RFC 4514 §2.4 requires: `"`, `+`, `,`, `;`,
 * `<`, `>` and `\` anywhere, a space or `#` first, a space last, and NUL.
 *
 * @example
 * ```ts
 * escapeNameValue("a,O=forged"); // "a\\,O=forged"
 * ```
 */
export function escapeNameValue(value: string): string {
  const chars = Array.from(value);
  return chars.map((char, i) => {
    if (char === "\0") return "\\00";
    if ('"+,;<>\\'.includes(char)) return "\\" + char;
    if (char === " " && (i === 0 || i === chars.length - 1)) return "\\ ";
    if (char === "#" && i === 0) return "\\#";
    return char;
  }).join("");
}

/** One `type=value` of an RDN. */
function attributeText(der: Uint8Array, attribute: Element): string {
  const [type, value] = children(
    der,
    expect(attribute, TAG.sequence, "an attribute"),
    "an attribute",
  );
  if (type === undefined || value === undefined) {
    throw new CertificateFormatError("an attribute without a type or a value");
  }
  const oid = oidText(der, expect(type, TAG.oid, "an attribute type"));
  const short = SHORT_NAMES[oid];
  const text = short === undefined ? undefined : stringValue(der, value);
  if (text === undefined) return `${short ?? oid}=#${hex(der.subarray(value.start, value.end))}`;
  return `${short}=${escapeNameValue(text)}`;
}

/** A Name element as RFC 4514 text: RDNs most significant last, multi-valued ones joined by `+`. */
function nameText(der: Uint8Array, name: Element): string {
  const rdns = children(der, expect(name, TAG.sequence, "a name"), "a name").map((rdn) =>
    children(der, expect(rdn, TAG.set, "an RDN"), "an RDN").map((attribute) =>
      attributeText(der, attribute)
    ).join("+")
  );
  return rdns.reverse().join(",");
}

/**
 * A DER-encoded Name as RFC 4514 text.
 *
 * @example
 * ```ts
 * declare const der: Uint8Array; // a Name: O=test, then CN=client
 * renderName(der); // "CN=client,O=test"
 * ```
 */
export function renderName(der: Uint8Array): string {
  return nameText(der, element(der, 0, der.length, "a name"));
}

// ---------------------------------------------------------------------------
// Subject alternative names, SPIFFE IDs
// ---------------------------------------------------------------------------

const SUBJECT_ALT_NAME = "2.5.29.17";

/** GeneralName tags (context-specific, RFC 5280 §4.2.1.6). */
const GENERAL_NAMES: Readonly<Record<number, string>> = {
  0xa0: "othername",
  0x81: "email",
  0x82: "DNS",
  0xa3: "X400Name",
  0xa4: "DirName",
  0xa5: "EdiPartyName",
  0x86: "URI",
  0x87: "IP Address",
  0x88: "Registered ID",
};

function altName(der: Uint8Array, name: Element): AltName {
  const label = GENERAL_NAMES[name.tag];
  if (label === undefined) {
    throw new CertificateFormatError(`a subject alternative name of tag 0x${hexByte(name.tag)}`);
  }
  const bytes = der.subarray(name.contents, name.end);
  switch (name.tag) {
    case 0x81:
    case 0x82:
    case 0x86:
      return { label, value: latin1(bytes) };
    case 0x87:
      return {
        label,
        value: bytes.length === 4 || bytes.length === 16
          ? ipaddr.fromByteArray(Array.from(bytes)).toString()
          : hex(bytes),
      };
    case 0xa4:
      return { label, value: nameText(der, element(der, name.contents, name.end, "a DirName")) };
    case 0x88: {
      const oid = { tag: TAG.oid, start: name.start, contents: name.contents, end: name.end };
      return { label, value: oidText(der, oid) };
    }
    default:
      return { label, value: "<unsupported>" };
  }
}

/** The names of a subjectAltName extension's value. */
function altNames(der: Uint8Array, value: Element): AltName[] {
  const names = element(der, value.contents, value.end, "subjectAltName");
  return children(der, expect(names, TAG.sequence, "subjectAltName"), "subjectAltName").map(
    (name) => altName(der, name),
  );
}

/** SAN text as OpenSSL and node write it: `DNS:localhost, IP Address:127.0.0.1`. */
export function renderAltNames(names: readonly AltName[]): string {
  return names.map(({ label, value }) => `${label}:${value}`).join(", ");
}

const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+((\/[A-Za-z0-9._-]+)*)$/;

/**
 * Whether `uri` is a SPIFFE ID as the SPIFFE ID standard defines it:
 * `spiffe://`, a trust domain of lower-case letters, digits, `.`, `-` and
 * `_`, then path segments of letters, digits, `.`, `-` and `_` (not `.` or
 * `..`), no trailing slash, no query, 2048 bytes at most.
 */
export function isSpiffeId(uri: string): boolean {
  const match = SPIFFE_ID.exec(uri);
  return match !== null && uri.length <= 2048 &&
    !match[1].split("/").some((segment) => segment === "." || segment === "..");
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/**
 * Reads the names of a DER certificate. Throws
 * {@linkcode CertificateFormatError} when the DER is not a certificate.
 */
export function readCertificateNames(der: Uint8Array): CertificateNames {
  const certificate = expect(
    element(der, 0, der.length, "a certificate"),
    TAG.sequence,
    "a certificate",
  );
  const [tbs] = children(der, certificate, "a certificate");
  if (tbs === undefined) throw new CertificateFormatError("a certificate: empty");
  const fields = children(der, expect(tbs, TAG.sequence, "tbsCertificate"), "tbsCertificate");
  // [0] version, then serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
  const at = fields[0]?.tag === 0xa0 ? 1 : 0;
  const issuer = fields[at + 2];
  const subject = fields[at + 4];
  if (issuer === undefined || subject === undefined || fields[at + 5] === undefined) {
    throw new CertificateFormatError("tbsCertificate: fields missing");
  }
  const extensions = fields.slice(at + 6).find((field) => field.tag === 0xa3);
  let sans: AltName[] = [];
  if (extensions !== undefined) {
    const list = element(der, extensions.contents, extensions.end, "extensions");
    for (const extension of children(der, expect(list, TAG.sequence, "extensions"), "extensions")) {
      const [id, ...rest] = children(
        der,
        expect(extension, TAG.sequence, "an extension"),
        "an extension",
      );
      const value = rest.find((part) => part.tag === TAG.octetString);
      if (id?.tag === TAG.oid && value && oidText(der, id) === SUBJECT_ALT_NAME) {
        sans = altNames(der, value);
      }
    }
  }
  return {
    subject: nameText(der, subject),
    issuer: nameText(der, issuer),
    subjectDer: der.subarray(subject.start, subject.end),
    issuerDer: der.subarray(issuer.start, issuer.end),
    altNames: sans,
    spiffeId: sans.find(({ label, value }) => label === "URI" && isSpiffeId(value))?.value,
  };
}

/** What a certificate with no subject and no SAN is called. */
export const EMPTY_NAME = "(empty subject)";

/**
 * What the banner and the logs call a certificate: its SPIFFE ID, else its
 * subject, else its first subject alternative name (`DNS:…`), else
 * {@linkcode EMPTY_NAME}. The forms cannot be mistaken for one another: a
 * subject has `=` before any `:`, a SAN has `:` first.
 */
export function certificateName(names: CertificateNames): string {
  if (names.spiffeId !== undefined) return names.spiffeId;
  if (names.subject !== "") return names.subject;
  const [first] = names.altNames;
  return first ? `${first.label}:${first.value}` : EMPTY_NAME;
}

/** The DER of a PEM block (`-----BEGIN …-----`, base64, `-----END …-----`). */
export function derFromPem(pem: string): Uint8Array<ArrayBuffer> {
  const base64 = pem.replace(/-----(BEGIN|END) [A-Z0-9 ]+-----/g, "").replace(/\s+/g, "");
  try {
    return Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
  } catch {
    throw new CertificateFormatError("not PEM: the base64 cannot be read");
  }
}
