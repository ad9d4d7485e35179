#!/usr/bin/env bash
# Build the pinned chart tooling (hack/versions.env) from Go modules with the machine's `go`,
# into a versioned cache dir outside the repo:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/helm-<ver>/helm
# Does nothing when the binary is already there. If HELM_BIN names an executable, that one is
# used and nothing is built.
# The last stdout line is the path of the helm binary; logs go to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
# shellcheck source=lib/gobuild.sh
source "${repo_root}/hack/lib/gobuild.sh"
: "${HELM_VERSION:?missing in hack/versions.env}"

if [[ -n "${HELM_BIN:-}" ]]; then
  if [[ -x "${HELM_BIN}" ]]; then
    log "using HELM_BIN=${HELM_BIN}"
    echo "${HELM_BIN}"
    exit 0
  fi
  log "HELM_BIN=${HELM_BIN} is not executable; building instead"
fi

# The version stamps helm's own Makefile sets: its version, and the Kubernetes version it
# assumes for .Capabilities (client-go v0.<minor> -> 1.<minor>).
helm_stamps() {
  local client_go k8s_minor p v=helm.sh/helm/v3/internal/version
  client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
  IFS=. read -r _ k8s_minor _ <<<"${client_go#v}"
  ldflags+=" -X ${v}.version=${HELM_VERSION} -X ${v}.metadata= -X ${v}.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${k8s_minor}"
  done
}

bin_dir="${cache_root}/bin/helm-${HELM_VERSION}"
go_build "${bin_dir}" helm helm.sh/helm/v3 "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm helm_stamps
echo "${bin_dir}/helm"
