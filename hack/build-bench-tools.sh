#!/usr/bin/env bash
# Build the benchmark's Go tools (hack/versions.env) from their Go modules with the machine's
# `go`, each into its own versioned cache dir outside the repo:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/toxiproxy-<ver>/toxiproxy-server
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/minio-<ver>/minio
# Does nothing for a tool that is already there (with BACKUP_SYNC_NO_BUILD set, a missing
# tool is an error instead of a build). The last stdout line is one `name=path` pair per
# tool, space separated; logs go to stderr. A cold build takes ~1 min (toxiproxy) and
# ~5 min (MinIO) on 2 cores.
#
#   bash hack/build-bench-tools.sh            # every tool
#   bash hack/build-bench-tools.sh toxiproxy  # only that one
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
# shellcheck source=lib/gobuild.sh
source "${repo_root}/hack/lib/gobuild.sh"
: "${TOXIPROXY_VERSION:?missing in hack/versions.env}"
: "${MINIO_VERSION:?missing in hack/versions.env}"

toxiproxy_version_stamp() {
  ldflags+=" -X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION}"
}

out=()
for tool in ${*:-toxiproxy minio}; do
  case "${tool}" in
    toxiproxy)
      dir="${cache_root}/bin/toxiproxy-${TOXIPROXY_VERSION}"
      go_build "${dir}" toxiproxy-server github.com/Shopify/toxiproxy/v2 "${TOXIPROXY_VERSION}" \
        github.com/Shopify/toxiproxy/v2/cmd/server toxiproxy_version_stamp
      out+=("toxiproxy=${dir}/toxiproxy-server")
      ;;
    minio)
      # No semver tags: MINIO_VERSION is the module proxy's pseudo-version of a commit.
      dir="${cache_root}/bin/minio-${MINIO_VERSION}"
      go_build "${dir}" minio github.com/minio/minio "${MINIO_VERSION}" github.com/minio/minio
      out+=("minio=${dir}/minio")
      ;;
    *)
      log "unknown tool ${tool} (known: toxiproxy minio)"
      exit 2
      ;;
  esac
done
echo "${out[*]}"
