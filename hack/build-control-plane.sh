#!/usr/bin/env bash
# Build the pinned etcd and kube-apiserver (hack/versions.env) from Go modules with the
# machine's `go`, into a versioned cache dir outside the repo:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/kubernetes-<ver>-etcd-<ver>/
# Does nothing when both binaries are already there. If KUBEBUILDER_ASSETS holds etcd and
# kube-apiserver (the envtest convention), nothing is built and that dir is used.
# The last stdout line is the directory holding the binaries; logs go to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
# shellcheck source=lib/gobuild.sh
source "${repo_root}/hack/lib/gobuild.sh"
: "${KUBERNETES_VERSION:?missing in hack/versions.env}"
: "${ETCD_VERSION:?missing in hack/versions.env}"

have_binaries() { [[ -x "$1/etcd" && -x "$1/kube-apiserver" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if have_binaries "${KUBEBUILDER_ASSETS}"; then
    log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
    echo "${KUBEBUILDER_ASSETS}"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} lacks etcd or kube-apiserver; building instead"
fi

bin_dir="${cache_root}/bin/kubernetes-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}"

# k8s.io/kubernetes as a dependency: its staging modules are `k8s.io/x => ./staging/...`
# in its own go.mod, which a dependent module cannot see; point each at its published
# v0.<minor>.<patch> twin, keep upstream's go version and GODEBUG defaults, and stamp the
# version as upstream's build does (else /version says v0.0.0-master).
kube_apiserver_module() {
  local k8s_semver="${KUBERNETES_VERSION#v}" k8s_major k8s_minor k8s_patch
  IFS=. read -r k8s_major k8s_minor k8s_patch <<<"${k8s_semver%%-*}"
  local staging_version="v0.${k8s_minor}.${k8s_patch}${k8s_semver#"${k8s_semver%%-*}"}"
  local k8s_gomod
  k8s_gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "${k8s_gomod}" ]] || { log "no go.mod for k8s.io/kubernetes"; return 1; }

  local staging=() edits=() m kv
  mapfile -t staging < <(
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' \
      "${k8s_gomod}" | sort -u
  )
  ((${#staging[@]} > 0)) || { log "no staging replaces found in ${k8s_gomod}"; return 1; }
  for m in "${staging[@]}"; do edits+=("-replace=${m}=${m}@${staging_version}"); done
  go mod edit "${edits[@]}"
  log "${#staging[@]} staging modules -> ${staging_version}"

  local k8s_go
  k8s_go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${k8s_gomod}")"
  [[ -n "${k8s_go}" ]] && go mod edit -go="${k8s_go}"
  while read -r kv; do
    [[ -n "${kv}" ]] && go mod edit -godebug="${kv}"
  done < <(sed -n 's/^godebug \([^ (]*=[^ ]*\)$/\1/p' "${k8s_gomod}")

  for kv in "gitVersion=${KUBERNETES_VERSION}" "gitMajor=${k8s_major}" \
    "gitMinor=${k8s_minor}" "gitTreeState=clean"; do
    ldflags+=" -X k8s.io/component-base/version.${kv} -X k8s.io/client-go/pkg/version.${kv}"
  done
}

go_build "${bin_dir}" etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" go.etcd.io/etcd/server/v3
go_build "${bin_dir}" kube-apiserver k8s.io/kubernetes "${KUBERNETES_VERSION}" \
  k8s.io/kubernetes/cmd/kube-apiserver kube_apiserver_module
have_binaries "${bin_dir}"
echo "${bin_dir}"
