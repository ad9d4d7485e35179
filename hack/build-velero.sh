#!/usr/bin/env bash
# Build the real Velero (server + client: one binary) and its AWS object-store plugin from
# their Go modules (versions in hack/versions.env) with the machine's `go`, each into its own
# versioned cache dir outside the repo, for the conformance tests (tests/conformance) and the
# benchmark's run of Velero's own sync:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/velero-<ver>/velero
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/velero-plugin-for-aws-<ver>/velero-plugin-for-aws
# Does nothing for a binary that is already there (with BACKUP_SYNC_NO_BUILD set, a missing
# one is an error instead of a build). The last stdout line is one `name=path` pair per
# binary, space separated; logs go to stderr. A cold build takes ~4-6 min per binary on 2
# cores.
#
#   bash hack/build-velero.sh                    # velero (both pinned versions) + the plugin
#   bash hack/build-velero.sh velero             # VELERO_VERSION only
#   bash hack/build-velero.sh velero-next        # VELERO_NEXT_VERSION only
#   bash hack/build-velero.sh velero@v1.16.2     # any other version, built the same way
#   bash hack/build-velero.sh plugin-for-aws     # VELERO_PLUGIN_FOR_AWS_VERSION only
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
# shellcheck source=lib/gobuild.sh
source "${repo_root}/hack/lib/gobuild.sh"
: "${VELERO_VERSION:?missing in hack/versions.env}"
: "${VELERO_NEXT_VERSION:?missing in hack/versions.env}"
: "${VELERO_PLUGIN_FOR_AWS_VERSION:?missing in hack/versions.env}"

# The module being built is only a dependency of the throwaway build module, so its own
# `replace` lines do not apply: copy every one of them (Velero replaces kopia with its fork).
copy_replaces() {
  local module="$1" version="$2" dir
  dir="$(go mod download -json "${module}@${version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "${dir}/go.mod" ]] || { log "no go.mod for ${module}@${version}"; return 1; }
  local line
  while IFS= read -r line; do
    [[ -z "${line}" ]] && continue
    log "replace ${line} (from ${module}@${version}/go.mod)"
    go mod edit -replace="${line}"
  done < <(go mod edit -json "${dir}/go.mod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    rhs = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    print(lhs + "=" + rhs)
')
}

velero_version=""
velero_hook() {
  copy_replaces github.com/vmware-tanzu/velero "${velero_version}"
  case "${velero_version}" in
    v1.18.*)
      # Velero v1.18 pins k8s.io/cli-runtime v0.33.x patches the module proxy does not serve.
      go mod edit -replace=k8s.io/cli-runtime=k8s.io/cli-runtime@v0.33.10
      ;;
  esac
  ldflags+=" -X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=${velero_version}"
  ldflags+=" -X github.com/vmware-tanzu/velero/pkg/buildinfo.GitTreeState=clean"
}

plugin_hook() {
  copy_replaces github.com/vmware-tanzu/velero-plugin-for-aws "${VELERO_PLUGIN_FOR_AWS_VERSION}"
}

build_velero() {
  velero_version="$1"
  local dir="${cache_root}/bin/velero-${velero_version}"
  go_build "${dir}" velero github.com/vmware-tanzu/velero "${velero_version}" \
    github.com/vmware-tanzu/velero/cmd/velero velero_hook
  out+=("velero-${velero_version}=${dir}/velero")
}

out=()
for tool in ${*:-velero velero-next plugin-for-aws}; do
  case "${tool}" in
    velero) build_velero "${VELERO_VERSION}" ;;
    velero-next) build_velero "${VELERO_NEXT_VERSION}" ;;
    velero@v*) build_velero "${tool#velero@}" ;;
    plugin-for-aws)
      dir="${cache_root}/bin/velero-plugin-for-aws-${VELERO_PLUGIN_FOR_AWS_VERSION}"
      go_build "${dir}" velero-plugin-for-aws github.com/vmware-tanzu/velero-plugin-for-aws \
        "${VELERO_PLUGIN_FOR_AWS_VERSION}" \
        github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws plugin_hook
      out+=("velero-plugin-for-aws=${dir}/velero-plugin-for-aws")
      ;;
    *)
      log "unknown tool ${tool} (known: velero velero-next velero@vX.Y.Z plugin-for-aws)"
      exit 2
      ;;
  esac
done
echo "${out[*]}"
