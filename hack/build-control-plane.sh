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
: "${KUBERNETES_VERSION:?missing in hack/versions.env}"
: "${ETCD_VERSION:?missing in hack/versions.env}"

log() { printf 'build-control-plane: %s\n' "$*" >&2; }
have_binaries() { [[ -x "$1/etcd" && -x "$1/kube-apiserver" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if have_binaries "${KUBEBUILDER_ASSETS}"; then
    log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
    echo "${KUBEBUILDER_ASSETS}"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS} lacks etcd or kube-apiserver; building instead"
fi

cache_root="${BACKUP_SYNC_CACHE:-${HOME}/.cache/backup-sync}"
bin_dir="${cache_root}/bin/kubernetes-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}"

if have_binaries "${bin_dir}"; then
  echo "${bin_dir}"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "${bin_dir}"

# One builder at a time per version (parallel test sessions); the others wait, then reuse.
if command -v flock >/dev/null; then
  exec 9>"${bin_dir}/.lock"
  flock 9
  if have_binaries "${bin_dir}"; then
    echo "${bin_dir}"
    exit 0
  fi
  # Leftovers of a killed build (never at the final names, so nothing half-written is used).
  rm -rf "${bin_dir}"/.build.*
fi

work_dir=""
stage_dir=""
cleanup() {
  # Module caches are read-only; chmod so rm can delete whatever go left in the temp dir.
  [[ -n "${work_dir}" && -d "${work_dir}" ]] && chmod -R u+w "${work_dir}" 2>/dev/null
  [[ -n "${work_dir}" ]] && rm -rf "${work_dir}"
  [[ -n "${stage_dir}" ]] && rm -rf "${stage_dir}"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/backup-sync-build.XXXXXX")"
# Staged next to the destination so the final `mv` is a same-filesystem (atomic) rename:
# a killed build never leaves a partial file under a final name.
stage_dir="$(mktemp -d "${bin_dir}/.build.XXXXXX")"
install_binary() {
  chmod 0755 "${stage_dir}/$1"
  mv -f "${stage_dir}/$1" "${bin_dir}/$1"
}

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOWORK=off
log "go: $(go version)"

started=${SECONDS}

# --- etcd: its own module, so it gets exactly the dependency versions etcd pins. ---
if [[ ! -x "${bin_dir}/etcd" ]]; then
  log "building etcd ${ETCD_VERSION}"
  mod="${work_dir}/etcd"
  mkdir -p "${mod}"
  (
    cd "${mod}"
    go mod init backup-sync.local/build-etcd >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    go mod download go.etcd.io/etcd/server/v3
    go build -trimpath -ldflags="-s -w" -o "${stage_dir}/etcd" go.etcd.io/etcd/server/v3
  )
  "${stage_dir}/etcd" --version >&2
  install_binary etcd
fi

# --- kube-apiserver: k8s.io/kubernetes as a dependency. ---
if [[ ! -x "${bin_dir}/kube-apiserver" ]]; then
  log "building kube-apiserver ${KUBERNETES_VERSION}"
  k8s_semver="${KUBERNETES_VERSION#v}"
  IFS=. read -r k8s_major k8s_minor k8s_patch <<<"${k8s_semver%%-*}"
  staging_version="v0.${k8s_minor}.${k8s_patch}${k8s_semver#"${k8s_semver%%-*}"}"
  mod="${work_dir}/kube-apiserver"
  mkdir -p "${mod}"
  (
    cd "${mod}"
    go mod init backup-sync.local/build-kube-apiserver >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@${KUBERNETES_VERSION}"
    k8s_gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "${k8s_gomod}" ]] || { echo "no go.mod for k8s.io/kubernetes" >&2; exit 1; }

    # Staging modules are `k8s.io/x => ./staging/src/k8s.io/x` there; point each at its
    # published twin instead.
    mapfile -t staging < <(
      sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' \
        "${k8s_gomod}" | sort -u
    )
    ((${#staging[@]} > 0)) || { echo "no staging replaces found in ${k8s_gomod}" >&2; exit 1; }
    edits=()
    for m in "${staging[@]}"; do edits+=("-replace=${m}=${m}@${staging_version}"); done
    go mod edit "${edits[@]}"
    echo "build-control-plane: ${#staging[@]} staging modules -> ${staging_version}" >&2

    # Same language version and GODEBUG defaults as upstream's own main module.
    k8s_go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${k8s_gomod}")"
    [[ -n "${k8s_go}" ]] && go mod edit -go="${k8s_go}"
    while read -r kv; do
      [[ -n "${kv}" ]] && go mod edit -godebug="${kv}"
    done < <(sed -n 's/^godebug \([^ (]*=[^ ]*\)$/\1/p' "${k8s_gomod}")

    pkg=k8s.io/component-base/version
    cgo=k8s.io/client-go/pkg/version
    stamp=""
    for kv in "gitVersion=${KUBERNETES_VERSION}" "gitMajor=${k8s_major}" \
      "gitMinor=${k8s_minor}" "gitTreeState=clean"; do
      stamp+=" -X ${pkg}.${kv} -X ${cgo}.${kv}"
    done
    go build -trimpath -ldflags="-s -w${stamp}" -o "${stage_dir}/kube-apiserver" \
      k8s.io/kubernetes/cmd/kube-apiserver
  )
  "${stage_dir}/kube-apiserver" --version >&2
  install_binary kube-apiserver
fi

log "built in $((SECONDS - started))s into ${bin_dir}"
echo "${bin_dir}"
