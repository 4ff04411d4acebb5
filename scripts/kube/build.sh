#!/usr/bin/env bash
# Builds Kubernetes control-plane binaries from Debian bookworm's `kubernetes` source package, offline,
# with golang-1.19-go in GOPATH mode, and caches them outside the work tree, keyed by this recipe.
#
#   scripts/kube/build.sh [COMPONENT...]   build what is missing (default: kube-apiserver); print the bin dir
#   scripts/kube/build.sh --bin-dir        print the bin dir for this recipe (nothing is built)
#
# COMPONENT is any cmd/<name> of the source (kube-apiserver, kubelet, kube-scheduler,
# kube-controller-manager, ...). Every component shares one prepared source tree and one Go build
# cache, so adding one later costs only its own compile.
#
# Cache (PODWALL_KUBE_CACHE, default /var/cache/podwall-kube):
#   gocache/                    Go's build cache (content-addressed, shared by every recipe)
#   <key>/gopath/src/k8s.io/kubernetes   the prepared source tree
#   <key>/bin/<component>       the binaries
# <key> hashes this file (comments aside) plus the Go toolchain and reflect2 package versions: change
# any of them and the next run builds afresh. Builds use -trimpath, so Go's cache serves every key:
# a new key recompiles only what its change touches.
# Needs dpkg-dev, golang-1.19-go and golang-github-modern-go-reflect2-dev (scripts/setup.sh installs
# them) and, for the first build only, the Debian mirror the machine uses.
set -euo pipefail

SRC_PKG=kubernetes
SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
KUBE_VERSION=v1.20.2
GOROOT_DIR=/usr/lib/go-1.19
REFLECT2_DIR=/usr/share/gocode/src/github.com/modern-go/reflect2
CACHE_ROOT=${PODWALL_KUBE_CACHE:-/var/cache/podwall-kube}

die() { echo "scripts/kube/build.sh: $*" >&2; exit 1; }
log() { echo "[kube-build $(date +%H:%M:%S)] $*" >&2; }

recipe_key() {
  [[ -x $GOROOT_DIR/bin/go ]] || die "$GOROOT_DIR/bin/go missing: install golang-1.19-go (scripts/setup.sh)"
  local reflect2
  reflect2=$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null) ||
    die "golang-github-modern-go-reflect2-dev is not installed (scripts/setup.sh installs it)"
  # Comment-only edits keep the key (and the binaries).
  { grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "${BASH_SOURCE[0]}"; "$GOROOT_DIR/bin/go" version
    echo "reflect2 $reflect2"; } | sha256sum | cut -c1-16
}

KEY=$(recipe_key)
DIR=$CACHE_ROOT/$KEY
BIN=$DIR/bin
if [[ ${1:-} == --bin-dir ]]; then
  echo "$BIN"
  exit 0
fi
COMPONENTS=("$@")
((${#COMPONENTS[@]})) || COMPONENTS=(kube-apiserver)

for c in "${COMPONENTS[@]}"; do
  [[ $c =~ ^[a-z0-9-]+$ ]] || die "bad component name: $c"
done
missing=()
find_missing() {
  missing=()
  local c
  for c in "${COMPONENTS[@]}"; do [[ -x $BIN/$c ]] || missing+=("$c"); done
}
find_missing
if ((${#missing[@]} == 0)); then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR" "$CACHE_ROOT/gocache"
# One build per recipe at a time; a caller that waited builds only what is still missing.
exec 9>"$DIR/lock"
flock 9
find_missing

export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOPATH=$DIR/gopath GOCACHE=$CACHE_ROOT/gocache GOROOT=$GOROOT_DIR
export PATH=$GOROOT_DIR/bin:$PATH
K=$GOPATH/src/k8s.io/kubernetes

# Fetch the source package with a private apt state holding deb-src entries derived from the
# machine's own deb entries, so the machine's apt configuration is left as it was.
fetch_source() {
  local apt=$DIR/apt dl=$DIR/download
  rm -rf "$apt" "$dl"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$dl"
  # Only Debian bookworm entries (other vendors' repositories carry no source packages).
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] && awk -v RS= -v ORS='\n\n' '
      { keep = 0; n = split($0, l, "\n")
        for (i = 1; i <= n; i++) if (l[i] ~ /^Suites:/) {
          m = split(l[i], w, /[ \t]+/)
          for (j = 2; j <= m; j++) if (w[j] ~ /^bookworm(-updates|-security)?$/) keep = 1 }
        if (keep) { sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); print } }' "$f" >"$apt/parts/$(basename "$f")"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -e $f ]] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break
      if ($(i + 1) ~ /^bookworm(-updates|-security)?$/) { $1 = "deb-src"; print } }' "$f" >>"$apt/parts/from-lists.list"
  done
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root -qq)
  log "fetching source package $SRC_PKG=$SRC_VERSION"
  apt-get "${opts[@]}" update >&2 || die "apt-get update (private deb-src lists) failed"
  (cd "$dl" && apt-get "${opts[@]}" source --download-only "$SRC_PKG=$SRC_VERSION" >&2) ||
    die "apt-get source $SRC_PKG=$SRC_VERSION failed"
  rm -rf "$K"
  mkdir -p "$(dirname "$K")"
  # apt checked every file against the signed Sources index; dpkg-source's warning that it cannot
  # check the .dsc's own signature (no debian-keyring here) is expected.
  dpkg-source -x "$dl"/${SRC_PKG}_*.dsc "$K" >&2
  rm -rf "$apt" "$dl"
}

# Bundled reflect2 1.0.1 dereferences nil in Type2 under Go 1.19 (the first request panics);
# Debian's 1.0.2 fixes it and is API-compatible.
replace_reflect2() {
  local v=$K/vendor/github.com/modern-go/reflect2
  [[ -d $REFLECT2_DIR ]] || die "$REFLECT2_DIR missing: install golang-github-modern-go-reflect2-dev"
  rm -rf "$v"
  mkdir -p "$v"
  cp -r "$REFLECT2_DIR"/. "$v"/
  rm -f "$v/go.mod" "$v/go.sum"
}

# The tarball lacks pkg/generated/openapi/zz_generated.openapi.go. Generate it the way upstream's
# Makefile.generated_files does: openapi-gen over every package tagged +k8s:openapi-gen (staging
# packages named by their vendor/ path), minus code-generator and sample-apiserver.
generate_openapi() {
  log "building openapi-gen"
  (cd "$K" && go build -trimpath -o "$DIR/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen)
  local dirs
  dirs=$(cd "$K" && find -H . \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \
    -o -type f -name '*.go' -print0 |
    xargs -0 grep -l --null '^// *+k8s:' | xargs -0 grep -l '+k8s:openapi-gen=' |
    sed -e 's|/[^/]*$||' -e 's|^\./||' -e 's|^staging/src/|vendor/|' |
    grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' |
    LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  [[ -n $dirs ]] || die "no +k8s:openapi-gen packages found under $K"
  log "generating pkg/generated/openapi/zz_generated.openapi.go"
  (cd "$K" && "$DIR/openapi-gen" --logtostderr -v 0 -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$DIR/openapi-violations.report" >&2)
  [[ -s $K/pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen wrote nothing"
}

if [[ ! -e $DIR/prepared ]]; then
  fetch_source
  replace_reflect2
  generate_openapi
  touch "$DIR/prepared"
fi

ldflags="-s -w"
for pkg in client-go/pkg/version component-base/version; do
  for kv in gitVersion=$KUBE_VERSION gitMajor=1 gitMinor=20 gitTreeState=clean; do
    ldflags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.$kv"
  done
done

mkdir -p "$BIN"
for c in "${missing[@]}"; do
  [[ -d $K/cmd/$c ]] || die "no cmd/$c in the $SRC_PKG source"
  log "building $c"
  start=$SECONDS
  (cd "$K" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN/.$c.tmp" "./cmd/$c")
  mv "$BIN/.$c.tmp" "$BIN/$c"
  log "built $c in $((SECONDS - start)) s"
done
echo "$BIN"
