/**
 * lab/types: the shapes a lab is described and reported in, shared by every lab module (kept here so
 * the modules never import each other for types).
 * May not: hold code.
 */

export interface LabPortSpec {
  port: number;
  protocol: "TCP" | "UDP" | "SCTP";
}
export interface LabPodSpec {
  key: string /* "ns/name" */;
  ips: string[] /* v4 and/or v6 */;
  serve: LabPortSpec[];
}
export interface LabPodState {
  key: string;
  netns: string;
  hostIf: string /* node-side veth name */;
  ips: string[];
}
export interface LabState {
  name: string;
  nodeNetns: string;
  /** Pods are ports of a bridge in the node (cni0-style) rather than routed veths. */
  bridged?: boolean;
  pods: LabPodState[];
}
export interface ProbeRequest {
  from: string /* pod key, or "node" for the node netns itself */;
  toIp: string;
  port: number;
  protocol: "TCP" | "UDP" | "SCTP";
}
