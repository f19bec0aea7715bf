#!/usr/bin/env bash
# k8s-assets.sh — provide the Kubernetes binaries ward's cluster tests need, offline, from Debian only:
#   etcd                         unpacked from Debian's etcd-server package (not installed);
#   kube-apiserver,              built from Debian bookworm's `kubernetes` source package (upstream v1.20.2 with
#   kube-controller-manager      its vendor/ tree) with Debian's Go 1.19. The vendored reflect2 v1.0.1 crashes on
#                                Go >= 1.18 and is swapped for Debian's packaged 1.0.2.
# The result is a folder in envtest's layout, printed on the last line: tests find it through KUBEBUILDER_ASSETS.
#
#   bash scripts/k8s-assets.sh                # 7-9 min on a new 2-core machine; about a second once cached
#   export KUBEBUILDER_ASSETS="$HOME/.cache/ward-k8s/bin"
#
# Idempotent and resumable (each finished step leaves a marker). Needs root or sudo for apt-get only.
# Environment: WARD_K8S_CACHE (default ~/.cache/ward-k8s), WARD_K8S_FORCE=1 rebuilds.
set -Eeuo pipefail

CACHE=${WARD_K8S_CACHE:-$HOME/.cache/ward-k8s}
BIN=$CACHE/bin
WORK=$CACHE/build
LOGS=$CACHE/logs
GO_PACKAGE=golang-1.19-go
GOROOT_DIR=/usr/lib/go-1.19
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
SUITE=bookworm

say() { printf '[k8s-assets %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[k8s-assets] ERROR: %s\n' "$*" >&2; exit 1; }

complete() {
  local b
  for b in etcd kube-apiserver kube-controller-manager; do
    "$BIN/$b" --version >/dev/null 2>&1 || return 1
  done
  "$BIN/kube-apiserver" --version 2>/dev/null | grep -q ' v1\.20\.'
}
if [ "${WARD_K8S_FORCE:-0}" != 1 ] && complete; then
  say "cached: $("$BIN/kube-apiserver" --version), $("$BIN/etcd" --version | head -n1)"
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN" "$WORK" "$LOGS"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# run NAME CMD...: the step's output goes to its log; on failure the log's tail is shown.
run() {
  local name=$1 started; shift
  started=$(date +%s)
  say "$name ..."
  if ! ( set -Eeuo pipefail; "$@" ) >"$LOGS/$name.log" 2>&1; then
    tail -n 40 "$LOGS/$name.log" >&2
    fail "step $name failed (log: $LOGS/$name.log)"
  fi
  say "$name done in $(( $(date +%s) - started ))s"
}
apt_as_root() { if [ "$(id -u)" = 0 ]; then apt-get -o APT::Sandbox::User=root "$@"; else apt-get "$@"; fi; }

packages() {
  local missing=() p mirror
  for p in "$GO_PACKAGE" golang-github-modern-go-reflect2-dev make dpkg-dev rsync; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Version: 1\.20\.'; then
    # The Debian archive apt already uses, as a deb-src entry for bookworm's kubernetes source.
    mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Origin: Debian' 'Label: Debian' 2>/dev/null | head -n1)
    [ -n "$mirror" ] || { $SUDO apt-get update; mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Origin: Debian' 'Label: Debian' | head -n1); }
    [ -n "$mirror" ] || { echo "no Debian archive in apt's sources"; return 1; }
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$SUITE" | $SUDO tee /etc/apt/sources.list.d/ward-k8s-src.sources
    $SUDO apt-get update
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  "$GOROOT_DIR/bin/go" version
}

etcd_binary() {
  cd "$WORK"
  ls etcd-server_*.deb >/dev/null 2>&1 || apt_as_root download etcd-server
  rm -rf etcd-deb && dpkg-deb -x "$(ls -1 etcd-server_*.deb | tail -n1)" etcd-deb
  install -m 0755 etcd-deb/usr/bin/etcd "$BIN/etcd"
  rm -rf etcd-deb
  "$BIN/etcd" --version
}

SRC=$WORK/gopath/src/k8s.io/kubernetes
kubernetes_source() {
  cd "$WORK"
  ls kubernetes_1.20*.dsc >/dev/null 2>&1 || apt_as_root source --download-only "kubernetes/$SUITE"
  rm -rf gopath && mkdir -p "$(dirname "$SRC")"
  dpkg-source -x "$(ls -1 kubernetes_1.20*.dsc | tail -n1)" "$SRC"
  local vendored=$SRC/vendor/github.com/modern-go/reflect2
  rm -rf "$vendored" && mkdir -p "$vendored" && cp -r "$REFLECT2"/. "$vendored"/
  rm -f "$vendored/go.mod" "$vendored/go.sum"
  touch "$SRC/.ward-ready"
}

export PATH="$GOROOT_DIR/bin:$PATH" CGO_ENABLED=0 GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local
export GOPATH=$WORK/gopath GOCACHE=$WORK/gocache

# Upstream's tarball lacks the generated OpenAPI definitions (they are .gitignored); `make gen_openapi` writes them.
openapi() { cd "$SRC" && make gen_openapi && test -s pkg/generated/openapi/zz_generated.openapi.go && touch "$SRC/.ward-openapi"; }

go_binary() {
  local name=$1 version flags="-s -w" pkg
  version=v$(sed -n '1s/^kubernetes (\([^)]*\)).*/\1/p' "$SRC/debian/changelog" | sed -e 's/^.*really//' -e 's/-[^-]*$//')
  for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$version" | cut -d. -f2) -X $pkg.gitTreeState=archive"
  done
  cd "$SRC"
  go build -tags selinux,notest -trimpath -ldflags "$flags" -o "$BIN/$name.tmp" "./cmd/$name"
  mv -f "$BIN/$name.tmp" "$BIN/$name"
  "$BIN/$name" --version
}

run packages packages
"$BIN/etcd" --version >/dev/null 2>&1 || run etcd etcd_binary
[ -f "$SRC/.ward-ready" ] || run source kubernetes_source
[ -f "$SRC/.ward-openapi" ] || run openapi openapi
for binary in kube-apiserver kube-controller-manager; do
  "$BIN/$binary" --version >/dev/null 2>&1 || run "$binary" go_binary "$binary"
done
complete || fail "binaries in $BIN do not answer --version"
chmod -R u+w "$WORK" 2>/dev/null || true
rm -rf "$WORK/gopath" "$WORK/gocache"
say "ready: $BIN ($(du -sh "$BIN" | cut -f1))"
echo "$BIN"
