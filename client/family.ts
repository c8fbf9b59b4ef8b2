/**
 * `-4` and `-6`: which IP family the client uses, and the address of a host
 * name in that family. Names are looked up with getaddrinfo (node:dns
 * `lookup`), as curl and ping do, so /etc/hosts counts; `Deno.resolveDns`
 * would ask DNS servers only.
 *
 * @example
 * ```ts
 * import { resolveAddress } from "./family.ts";
 *
 * await resolveAddress("localhost", 4); // { address: "127.0.0.1", family: 4 }
 * await resolveAddress("::1", undefined); // { address: "::1", family: 6 }
 * ```
 *
 * @module
 */
import dns from "node:dns";
import { isIP } from "node:net";

/** An IP family by its number, as `-4`/`-6` and getaddrinfo name them. */
export type IpVersion = 4 | 6;

/** The families in the order reports list them. */
export const IP_VERSIONS: readonly IpVersion[] = [4, 6];

/** How reports name a family: `IPv4`, `IPv6`. */
export function familyName(version: IpVersion): "IPv4" | "IPv6" {
  return version === 4 ? "IPv4" : "IPv6";
}

/** The family of a literal IP address; `undefined` for a name. */
export function literalFamily(hostname: string): IpVersion | undefined {
  const version = isIP(hostname);
  return version === 0 ? undefined : version as IpVersion;
}

/** A host name without an address (in the family asked for): failure reason `dns`. */
export class LookupError extends Error {
  /** Names the error in a stack trace. */
  override name = "LookupError";
}

/** An address and its family. */
export interface ResolvedAddress {
  /** The IP address, as text (`127.0.0.1`, `::1`). */
  readonly address: string;
  /** Its family. */
  readonly family: IpVersion;
}

function lookup(hostname: string, family: 0 | IpVersion): Promise<ResolvedAddress> {
  return new Promise((resolve, reject) =>
    dns.lookup(hostname, { family }, (error, address, found) => {
      if (error) reject(error);
      else resolve({ address, family: found as IpVersion });
    })
  );
}

function lookupAll(hostname: string): Promise<string[]> {
  return new Promise((resolve) =>
    dns.lookup(hostname, { all: true }, (error, addresses) => {
      resolve(error ? [] : addresses.map((a) => a.address));
    })
  );
}

/**
 * The address to use for `hostname`: a literal as it is; a name's first
 * address in `family` (any family: getaddrinfo's first). Throws
 * {@linkcode LookupError}; when the name has addresses of the other family
 * only, its message says so and names them.
 */
export async function resolveAddress(
  hostname: string,
  family: IpVersion | undefined,
): Promise<ResolvedAddress> {
  const literal = literalFamily(hostname);
  if (literal !== undefined) return { address: hostname, family: literal };
  try {
    return await lookup(hostname, family ?? 0);
  } catch (error) {
    const words = (error as Error).message;
    const others = family === undefined ? [] : await lookupAll(hostname);
    if (others.length > 0) {
      throw new LookupError(
        `${JSON.stringify(hostname)} has no ${familyName(family!)} address (${words}); ` +
          `it has ${others.join(", ")}`,
      );
    }
    throw new LookupError(`failed to lookup address information: ${words}`);
  }
}
