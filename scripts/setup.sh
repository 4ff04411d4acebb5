#!/usr/bin/env bash
# Set up a fresh Debian machine for podwall: kernel tools, Node dependencies, build. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# Every Debian package the agent, the lab, the tests and the benchmarks use; installed when missing.
# (gcc and libc6-dev build the chained CNI plugin and a benchmark helper; util-linux has taskset,
# unshare, setpriv and flock.)
PKGS=(iptables ipset conntrack iproute2 libnetfilter-queue1 libnetfilter-conntrack3 libnetfilter-log1 python3 socat iperf3
  netcat-openbsd procps gcc libc6-dev util-linux mount)
# chromium and a font render the HTML reports in the browser test.
PKGS+=(chromium fonts-liberation)
# promtool checks and unit-tests the alert rules in deploy/; Debian ships it in the prometheus package.
command -v promtool >/dev/null 2>&1 || PKGS+=(prometheus)
# The real control plane of e2e/apiserver.test.ts: etcd, and what builds kube-apiserver from
# Debian's kubernetes source (scripts/kube/build.sh); openssl makes its certificates.
PKGS+=(etcd-server golang-1.19-go golang-github-modern-go-reflect2-dev dpkg-dev openssl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  # Wait for another apt run on this machine rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm ci --no-fund --no-audit --loglevel=error
npm run build --silent
# kube-apiserver, built once per machine and cached outside the work tree (a few minutes the first
# time; instant afterwards).
kube_bin=$(bash scripts/kube/build.sh kube-apiserver)
echo "podwall set up: node $(node --version), $(iptables --version), kube-apiserver in $kube_bin"
