/**
 * gen-crds: writes deploy/crds/*.yaml, the CustomResourceDefinitions podwall ships for the
 * network-policy-api kinds: ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) and its
 * predecessors AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1), standard channel.
 *
 *   npx tsx scripts/gen-crds.ts          write the files
 *   npx tsx scripts/gen-crds.ts --check  exit 1 if a file differs from what would be written
 *
 * The schemas follow the API reference (kubernetes-sigs/network-policy-api) and must run on
 * Kubernetes 1.20, which has no CEL: every rule the reference states with CEL and OpenAPI cannot
 * express is listed in `notExpressible` below and left to the implementation. One builder per
 * shared type keeps the three definitions consistent.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";

type Schema = Record<string, unknown>;

const GROUP = "policy.networking.k8s.io";
const OUT = join(import.meta.dirname, "..", "deploy", "crds");

/** Rules of the reference that need CEL (Kubernetes 1.25+): the implementation must reject them. */
export const notExpressible = [
  "port ranges: start < end",
  "egress rules: a named port cannot be combined with a networks peer",
];

const str = (description: string, extra: Schema = {}): Schema => ({ type: "string", description, ...extra });
const int32 = (description: string, minimum: number, maximum: number): Schema => ({
  type: "integer",
  format: "int32",
  description,
  minimum,
  maximum,
});
const list = (
  description: string,
  items: Schema,
  minItems: number | undefined,
  maxItems: number,
): Schema => ({
  type: "array",
  description,
  items,
  ...(minItems === undefined ? {} : { minItems }),
  maxItems,
});
/** An object of which exactly one property is set (the reference's "exactly one field"). */
const oneOf = (description: string, properties: Record<string, Schema>): Schema => ({
  type: "object",
  description,
  minProperties: 1,
  maxProperties: 1,
  properties,
});

function labelSelector(description: string): Schema {
  return {
    type: "object",
    description: `${description} A label selector: matchLabels and matchExpressions are ANDed; an empty selector selects everything.`,
    properties: {
      matchLabels: { type: "object", additionalProperties: { type: "string" } },
      matchExpressions: {
        type: "array",
        items: {
          type: "object",
          required: ["key", "operator"],
          properties: {
            key: { type: "string" },
            operator: { type: "string", enum: ["In", "NotIn", "Exists", "DoesNotExist"] },
            values: { type: "array", items: { type: "string" } },
          },
        },
      },
    },
  };
}

function namespacedPod(description: string): Schema {
  return {
    type: "object",
    description,
    required: ["podSelector"],
    properties: {
      namespaceSelector: labelSelector("The namespaces to pick pods from (empty or absent: all)."),
      podSelector: labelSelector("The pods, within those namespaces."),
    },
  };
}

const namespacesPeer = () =>
  labelSelector("Every pod in the selected namespaces (host-network pods excluded).");
const podsPeer = () =>
  namespacedPod("The selected pods in the selected namespaces (host-network pods excluded).");
const networks = (max: number) => ({
  ...list(
    "Destination CIDR blocks (IPv4 or IPv6), for peers outside the cluster; cluster traffic is matched too.",
    { type: "string", format: "cidr", maxLength: 43 },
    1,
    max,
  ),
  "x-kubernetes-list-type": "set",
});

function subject(kind: string): Schema {
  return oneOf(`The pods this ${kind} applies to; exactly one of namespaces or pods.`, {
    namespaces: labelSelector("Every pod in the selected namespaces."),
    pods: namespacedPod("The selected pods in the selected namespaces."),
  });
}

const portRange = (withProtocol: boolean): Schema => ({
  type: "object",
  description: "An inclusive port range; start must be less than end.",
  required: ["start", "end"],
  properties: {
    ...(withProtocol ? { protocol: protocolEnum() } : {}),
    start: int32("First port of the range.", 1, 65535),
    end: int32("Last port of the range.", 1, 65535),
  },
});

const protocolEnum = (): Schema => ({
  type: "string",
  description: "TCP, UDP or SCTP (default TCP).",
  enum: ["TCP", "UDP", "SCTP"],
  default: "TCP",
});

const namedPort = (description: string): Schema =>
  str(description, { maxLength: 15, pattern: "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" });

const conditionsStatus = (kind: string): Schema => ({
  type: "object",
  description: `What the implementations report about this ${kind}.`,
  properties: {
    conditions: {
      type: "array",
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
      items: {
        type: "object",
        required: ["type", "status", "lastTransitionTime", "reason", "message"],
        properties: {
          type: str("Condition type, CamelCase.", { maxLength: 316 }),
          status: str("True, False or Unknown.", { enum: ["True", "False", "Unknown"] }),
          observedGeneration: { type: "integer", format: "int64", minimum: 0 },
          lastTransitionTime: str("When status last changed.", { format: "date-time" }),
          reason: str("Machine-readable reason, CamelCase.", { maxLength: 1024, minLength: 1 }),
          message: str("Human-readable details.", { maxLength: 32768 }),
        },
      },
    },
  },
});

// ---------------------------------------------------------------- ClusterNetworkPolicy v1alpha2

function cnpProtocols(): Schema {
  const proto = (name: string) => ({
    type: "object",
    description: `${name} matches; set destinationPort.`,
    minProperties: 1,
    properties: {
      destinationPort: oneOf("A destination port: exactly one of number or range.", {
        number: int32("One port.", 1, 65535),
        range: portRange(false),
      }),
    },
  });
  return list(
    "Protocol-specific matches, any of which may match; absent: every protocol and port.",
    oneOf("Exactly one of tcp, udp, sctp or destinationNamedPort.", {
      tcp: proto("TCP"),
      udp: proto("UDP"),
      sctp: proto("SCTP"),
      destinationNamedPort: namedPort("A container port name of the destination pod."),
    }),
    1,
    25,
  );
}

function cnpRule(direction: "ingress" | "egress"): Schema {
  const peers = direction === "ingress" ? "from" : "to";
  const peer =
    direction === "ingress"
      ? oneOf("A source: exactly one of namespaces or pods.", {
          namespaces: namespacesPeer(),
          pods: podsPeer(),
        })
      : oneOf("A destination: exactly one of namespaces, pods or networks.", {
          namespaces: namespacesPeer(),
          pods: podsPeer(),
          networks: networks(25),
        });
  return {
    type: "object",
    description: `An ${direction} rule: traffic ${peers} any of the peers (and matching protocols) gets the action.`,
    required: ["action", peers],
    properties: {
      name: str("An identifier for logs and metrics.", { maxLength: 100 }),
      action: str(
        "Accept (no further policy of any tier applies), Deny, or Pass (skip the rest of this tier).",
        { enum: ["Accept", "Deny", "Pass"] },
      ),
      [peers]: list(`The peers; at least one.`, peer, 1, 25),
      protocols: cnpProtocols(),
    },
  };
}

function clusterNetworkPolicySchema(): Schema {
  return {
    type: "object",
    description: "A cluster-wide network policy in the Admin or Baseline tier.",
    required: ["spec"],
    properties: {
      apiVersion: { type: "string" },
      kind: { type: "string" },
      metadata: { type: "object" },
      spec: {
        type: "object",
        required: ["tier", "priority", "subject"],
        properties: {
          tier: str(
            "Admin (before NetworkPolicies; cannot be overridden) or Baseline (after them; NetworkPolicies override it).",
            { enum: ["Admin", "Baseline"] },
          ),
          priority: int32("0-1000; lower values are evaluated first within the tier.", 0, 1000),
          subject: subject("ClusterNetworkPolicy"),
          ingress: list(
            "Ingress rules in order of precedence; at most 25.",
            cnpRule("ingress"),
            undefined,
            25,
          ),
          egress: list("Egress rules in order of precedence; at most 25.", cnpRule("egress"), undefined, 25),
        },
      },
      status: conditionsStatus("ClusterNetworkPolicy"),
    },
  };
}

// ------------------------------------- AdminNetworkPolicy / BaselineAdminNetworkPolicy v1alpha1

function anpPorts(): Schema {
  return list(
    "Destination ports, any of which may match; absent: every port.",
    oneOf("Exactly one of portNumber, namedPort or portRange.", {
      portNumber: {
        type: "object",
        description: "One port.",
        required: ["port"],
        properties: { protocol: protocolEnum(), port: int32("The port.", 1, 65535) },
      },
      namedPort: namedPort("A container port name of the destination pod."),
      portRange: portRange(true),
    }),
    1,
    100,
  );
}

function anpRule(direction: "ingress" | "egress", actions: string[]): Schema {
  const peers = direction === "ingress" ? "from" : "to";
  const peer =
    direction === "ingress"
      ? oneOf("A source: exactly one of namespaces or pods.", {
          namespaces: namespacesPeer(),
          pods: podsPeer(),
        })
      : oneOf("A destination: exactly one of namespaces, pods or networks.", {
          namespaces: namespacesPeer(),
          pods: podsPeer(),
          networks: networks(25),
        });
  return {
    type: "object",
    description: `An ${direction} rule: traffic ${peers} any of the peers (and matching ports) gets the action.`,
    required: ["action", peers],
    properties: {
      name: str("An identifier for logs and metrics.", { maxLength: 100 }),
      action: str(`One of ${actions.join(", ")}.`, { enum: actions }),
      [peers]: list("The peers; at least one.", peer, 1, 100),
      ports: anpPorts(),
    },
  };
}

function adminSchema(kind: "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy"): Schema {
  const admin = kind === "AdminNetworkPolicy";
  const actions = admin ? ["Allow", "Deny", "Pass"] : ["Allow", "Deny"];
  const spec: Schema = {
    type: "object",
    required: admin ? ["priority", "subject"] : ["subject"],
    properties: {
      ...(admin ? { priority: int32("0-1000; lower values are evaluated first.", 0, 1000) } : {}),
      subject: subject(kind),
      ingress: list(
        "Ingress rules in order of precedence; at most 100.",
        anpRule("ingress", actions),
        undefined,
        100,
      ),
      egress: list(
        "Egress rules in order of precedence; at most 100.",
        anpRule("egress", actions),
        undefined,
        100,
      ),
    },
  };
  return {
    type: "object",
    description: admin
      ? "A cluster-wide policy evaluated before NetworkPolicies (superseded by ClusterNetworkPolicy tier Admin)."
      : "The cluster's baseline, evaluated after NetworkPolicies; the only one is named default (superseded by ClusterNetworkPolicy tier Baseline).",
    required: ["spec"],
    properties: {
      apiVersion: { type: "string" },
      kind: { type: "string" },
      // Only metadata.name and generateName may be constrained in a CRD; this is how 1.20 keeps
      // the baseline a singleton (the reference uses CEL).
      metadata: admin
        ? { type: "object" }
        : { type: "object", properties: { name: { type: "string", enum: ["default"] } } },
      spec,
      status: conditionsStatus(kind),
    },
  };
}

// ---------------------------------------------------------------- the CRD objects

interface Crd {
  file: string;
  kind: string;
  plural: string;
  shortName: string;
  version: string;
  approval: string;
  schema: Schema;
  columns: { name: string; type: string; jsonPath: string }[];
}

const age = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

export const crds: Crd[] = [
  {
    file: "clusternetworkpolicies.yaml",
    kind: "ClusterNetworkPolicy",
    plural: "clusternetworkpolicies",
    shortName: "cnp",
    version: "v1alpha2",
    approval: "https://github.com/kubernetes-sigs/network-policy-api/pull/347",
    schema: clusterNetworkPolicySchema(),
    columns: [
      { name: "Tier", type: "string", jsonPath: ".spec.tier" },
      { name: "Priority", type: "integer", jsonPath: ".spec.priority" },
      age,
    ],
  },
  {
    file: "adminnetworkpolicies.yaml",
    kind: "AdminNetworkPolicy",
    plural: "adminnetworkpolicies",
    shortName: "anp",
    version: "v1alpha1",
    approval: "https://github.com/kubernetes-sigs/network-policy-api/pull/300",
    schema: adminSchema("AdminNetworkPolicy"),
    columns: [{ name: "Priority", type: "integer", jsonPath: ".spec.priority" }, age],
  },
  {
    file: "baselineadminnetworkpolicies.yaml",
    kind: "BaselineAdminNetworkPolicy",
    plural: "baselineadminnetworkpolicies",
    shortName: "banp",
    version: "v1alpha1",
    approval: "https://github.com/kubernetes-sigs/network-policy-api/pull/300",
    schema: adminSchema("BaselineAdminNetworkPolicy"),
    columns: [age],
  },
];

export function crdObject(c: Crd): Schema {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${c.plural}.${GROUP}`,
      // *.k8s.io groups need the API review's approval named (or the server refuses the CRD).
      annotations: { "api-approved.kubernetes.io": c.approval },
    },
    spec: {
      group: GROUP,
      scope: "Cluster",
      names: {
        kind: c.kind,
        listKind: `${c.kind}List`,
        plural: c.plural,
        singular: c.kind.toLowerCase(),
        shortNames: [c.shortName],
      },
      versions: [
        {
          name: c.version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: c.columns,
          schema: { openAPIV3Schema: c.schema },
        },
      ],
    },
  };
}

export function crdFileText(c: Crd): string {
  const head = [
    "# Generated by scripts/gen-crds.ts (npx tsx scripts/gen-crds.ts); edit that file, not this one.",
    `# ${c.kind} (${GROUP}/${c.version}), standard channel, for Kubernetes 1.20 and newer.`,
    `# Not expressible without CEL, so left to the implementation to reject: ${notExpressible.join("; ")}.`,
  ];
  return `${head.join("\n")}\n${stringify(crdObject(c), { lineWidth: 0 })}`;
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const check = process.argv.includes("--check");
  let stale = 0;
  for (const c of crds) {
    const path = join(OUT, c.file);
    const text = crdFileText(c);
    if (check) {
      let old = "";
      try {
        old = readFileSync(path, "utf8");
      } catch {}
      if (old !== text) {
        console.error(`${path} is out of date: run npx tsx scripts/gen-crds.ts`);
        stale++;
      }
    } else writeFileSync(path, text);
  }
  process.exit(stale ? 1 : 0);
}
