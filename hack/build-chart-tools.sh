#!/usr/bin/env bash
# Build the pinned chart tooling (hack/versions.env) from Go modules with the machine's `go`,
# into a versioned cache dir outside the repo, like hack/build-control-plane.sh:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/helm-<ver>/helm
# Does nothing when the binary is already there. If HELM_BIN names an executable, that one is
# used and nothing is built.
# The last stdout line is the path of the helm binary; logs go to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
: "${HELM_VERSION:?missing in hack/versions.env}"

log() { printf 'build-chart-tools: %s\n' "$*" >&2; }

if [[ -n "${HELM_BIN:-}" ]]; then
  if [[ -x "${HELM_BIN}" ]]; then
    log "using HELM_BIN=${HELM_BIN}"
    echo "${HELM_BIN}"
    exit 0
  fi
  log "HELM_BIN=${HELM_BIN} is not executable; building instead"
fi

cache_root="${BACKUP_SYNC_CACHE:-${HOME}/.cache/backup-sync}"
bin_dir="${cache_root}/bin/helm-${HELM_VERSION}"
helm="${bin_dir}/helm"

if [[ -x "${helm}" ]]; then
  echo "${helm}"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "${bin_dir}"

# One builder at a time per version (parallel sessions); the others wait, then reuse.
if command -v flock >/dev/null; then
  exec 9>"${bin_dir}/.lock"
  flock 9
  if [[ -x "${helm}" ]]; then
    echo "${helm}"
    exit 0
  fi
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

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/backup-sync-chart-tools.XXXXXX")"
# Staged next to the destination so the final `mv` is an atomic same-filesystem rename.
stage_dir="$(mktemp -d "${bin_dir}/.build.XXXXXX")"

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOWORK=off
log "go: $(go version)"
started=${SECONDS}

# helm as a dependency of a throwaway module: exactly the dependency versions helm pins.
log "building helm ${HELM_VERSION}"
mod="${work_dir}/helm"
mkdir -p "${mod}"
(
  cd "${mod}"
  go mod init backup-sync.local/build-helm >/dev/null 2>&1
  go mod edit -require="helm.sh/helm/v3@${HELM_VERSION}"
  go mod download helm.sh/helm/v3
  # The version stamps helm's own Makefile sets: its version, and the Kubernetes version it
  # assumes for .Capabilities (client-go v0.<minor> -> 1.<minor>).
  client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
  IFS=. read -r _ k8s_minor _ <<<"${client_go#v}"
  v=helm.sh/helm/v3/internal/version
  ldflags="-s -w -X ${v}.version=${HELM_VERSION} -X ${v}.metadata= -X ${v}.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${k8s_minor}"
  done
  go build -trimpath -ldflags="${ldflags}" -o "${stage_dir}/helm" helm.sh/helm/v3/cmd/helm
)
"${stage_dir}/helm" version --short >&2
chmod 0755 "${stage_dir}/helm"
mv -f "${stage_dir}/helm" "${helm}"

log "built in $((SECONDS - started))s into ${bin_dir}"
echo "${helm}"
