#!/usr/bin/env bash
# Set up a fresh Debian machine for podwall: kernel tools, Node dependencies, build. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# Every Debian package the agent, the lab, the tests and the benchmarks use; installed when missing.
# (gcc and libc6-dev build the chained CNI plugin and a benchmark helper; util-linux has taskset;
# chromium and a font render the HTML reports in the browser test.)
PKGS=(iptables ipset conntrack iproute2 libnetfilter-queue1 libnetfilter-conntrack3 python3 socat iperf3 netcat-openbsd procps
  gcc libc6-dev util-linux chromium fonts-liberation)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm ci --no-fund --no-audit --loglevel=error
npm run build --silent
echo "podwall set up: node $(node --version), $(iptables --version)"
