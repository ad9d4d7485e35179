# shellcheck shell=bash
# Sourced by the hack/build-*.sh scripts: build a Go main package from a pinned module with
# the machine's `go`, into a versioned cache dir outside the repo, once.
#
#   go_build BIN_DIR BINARY MODULE VERSION PACKAGE [HOOK]
#
# PACKAGE is built from MODULE@VERSION as a dependency of a throwaway module, so it gets
# exactly the dependency versions MODULE pins. HOOK, a function name, runs in that module's
# directory after the download and before the build: it may edit the module (replace lines,
# go version) and append to the variable `ldflags`. Nothing is done when BIN_DIR/BINARY is
# already there; with BACKUP_SYNC_NO_BUILD set, a missing binary is an error instead. One
# builder per BIN_DIR at a time (parallel sessions wait, then reuse); the binary is staged
# next to its destination and renamed into place, so a killed build never leaves a partial
# binary under its final name.

cache_root="${BACKUP_SYNC_CACHE:-${HOME}/.cache/backup-sync}"

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOWORK=off

log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

go_build() {
  local bin_dir="$1" binary="$2" module="$3" version="$4" package="$5" hook="${6:-}"
  [[ -x "${bin_dir}/${binary}" ]] && return 0
  if [[ -n "${BACKUP_SYNC_NO_BUILD:-}" ]]; then
    log "${binary} ${version} is not built (BACKUP_SYNC_NO_BUILD is set)"
    return 1
  fi
  command -v go >/dev/null || { log "go is not on PATH"; return 1; }
  mkdir -p "${bin_dir}"
  (
    exec 9>"${bin_dir}/.lock"
    command -v flock >/dev/null && flock 9
    [[ -x "${bin_dir}/${binary}" ]] && exit 0
    rm -rf "${bin_dir}/.build.${binary}".*
    work_dir="$(mktemp -d "${TMPDIR:-/tmp}/backup-sync-build-${binary}.XXXXXX")"
    stage_dir="$(mktemp -d "${bin_dir}/.build.${binary}.XXXXXX")"
    # Module caches are read-only: chmod so rm can delete what go left in the temp dir.
    trap 'chmod -R u+w "${work_dir}" 2>/dev/null; rm -rf "${work_dir}" "${stage_dir}"' EXIT
    log "building ${binary} ${version} (${module}) with $(go version)"
    started=${SECONDS}
    cd "${work_dir}"
    go mod init "backup-sync.local/build-${binary}" >/dev/null 2>&1
    go mod edit -require="${module}@${version}"
    go mod download "${module}@${version}"
    ldflags="-s -w"
    if [[ -n "${hook}" ]]; then "${hook}"; fi
    go build -trimpath -ldflags="${ldflags}" -o "${stage_dir}/${binary}" "${package}"
    chmod 0755 "${stage_dir}/${binary}"
    mv -f "${stage_dir}/${binary}" "${bin_dir}/${binary}"
    log "built ${binary} in $((SECONDS - started))s into ${bin_dir}"
  )
}
