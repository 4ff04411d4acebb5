#!/usr/bin/env bash
# Set up a fresh Debian machine for podwall: kernel tools, Node dependencies, build. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v iptables >/dev/null || ! command -v ipset >/dev/null || ! command -v socat >/dev/null \
  || ! ldconfig -p | grep -q libnetfilter_queue.so.1 || ! command -v python3 >/dev/null || ! command -v iperf3 >/dev/null \
  || ! command -v conntrack >/dev/null || ! command -v gcc >/dev/null || ! command -v taskset >/dev/null; then
  apt-get update -qq
  # gcc builds the chained CNI plugin and the benchmarks' C helper in the tests.
  apt-get install -y -qq iptables ipset conntrack iproute2 libnetfilter-queue1 python3 socat iperf3 \
    netcat-openbsd procps gcc libc6-dev util-linux >/dev/null
fi
npm ci --no-fund --no-audit --loglevel=error
npm run build --silent
echo "podwall set up: node $(node --version), $(iptables --version)"
