/**
 * ports: compiled port matchers for one NetworkPolicy rule.
 *
 * Owns: numeric ports, inclusive endPort ranges, protocol-only entries and named ports, which are
 * resolved against the *destination* pod's own container ports (two pods may map a name differently).
 * May not: resolve names globally; a named port never matches a destination that is not a known pod.
 */
import type { ContainerPort, ProtoNum } from "./model.js";
import { PROTO, PROTO_NAMES } from "./model.js";

/**
 * A named port with `proto` ANY_PROTO (the cluster kinds' named ports carry no protocol) matches a
 * container port of that name over that container port's own protocol.
 */
export const ANY_PROTO = 0;

export type PortSpec =
  | { proto: ProtoNum; from: number; to: number; name?: undefined }
  | { proto: ProtoNum | typeof ANY_PROTO; name: string; from?: undefined; to?: undefined };

/** null = every port of every protocol (the rule had no `ports`). */
export type PortMatcher = readonly PortSpec[] | null;

export function portsMatch(
  ports: PortMatcher,
  proto: number,
  port: number,
  dstPorts: readonly ContainerPort[] | undefined,
): boolean {
  if (ports === null) return true;
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i];
    if (p.proto !== proto && p.proto !== ANY_PROTO) continue;
    if (p.name === undefined) {
      if (port >= p.from && port <= p.to) return true;
    } else if (dstPorts) {
      for (let j = 0; j < dstPorts.length; j++) {
        const c = dstPorts[j];
        if (c.name === p.name && c.port === port && PROTO[c.protocol] === proto) return true;
      }
    }
  }
  return false;
}

export function describePort(p: PortSpec): string {
  if (p.name !== undefined)
    return p.proto === ANY_PROTO ? `port named ${p.name}` : `${p.name}/${PROTO_NAMES[p.proto]}`;
  const proto = PROTO_NAMES[p.proto];
  if (p.from === 0 && p.to === 65535) return `any/${proto}`;
  return p.from === p.to ? `${p.from}/${proto}` : `${p.from}-${p.to}/${proto}`;
}
