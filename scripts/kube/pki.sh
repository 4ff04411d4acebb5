#!/usr/bin/env bash
# Certificates and keys for a throwaway control plane, made with openssl:
#
#   scripts/kube/pki.sh DIR [SAN...]
#
# DIR/ca.{crt,key}          the cluster CA (serving and client certificates)
# DIR/apiserver.{crt,key}   kube-apiserver's serving certificate: 127.0.0.1, ::1, localhost, the
#                           kubernetes.default names, 10.96.0.1, plus each SAN given (IP or DNS name)
# DIR/admin.{crt,key}       a client certificate in system:masters (the tests' own identity)
# DIR/sa.{key,pub}          the service-account token signing key pair
# Everything is valid for 2 days: a test cluster never outlives its run.
set -euo pipefail
dir=${1:?usage: pki.sh DIR [SAN...]}
shift
mkdir -p "$dir"
cd "$dir"
umask 077
days=2
sans="IP:127.0.0.1,IP:::1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
for s in "$@"; do
  if [[ $s =~ ^[0-9.]+$ || $s == *:* ]]; then sans+=",IP:$s"; else sans+=",DNS:$s"; fi
done

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -subj /CN=podwall-test-ca -days "$days" -out ca.crt \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign

# leaf NAME SUBJECT EXTENDED-KEY-USAGE [SUBJECT-ALT-NAMES]
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$3"
  [[ -n ${4:-} ]] && ext+="
subjectAltName=$4"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -out "$1.crt" \
    -extfile <(echo "$ext") 2>/dev/null
  rm -f "$1.csr"
}
leaf apiserver /CN=kube-apiserver serverAuth "$sans"
leaf admin "/O=system:masters/CN=podwall-test-admin" clientAuth

# Service-account tokens are RS256 by default; an RSA key keeps every verifier happy.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
openssl pkey -in sa.key -pubout -out sa.pub
rm -f ca.srl
