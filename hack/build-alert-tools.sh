#!/usr/bin/env bash
# The tools the chart's alert rules are tested with (tests/chart/test_alerts.py), pinned in
# hack/versions.env, cached by version outside the repo:
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/bin/prometheus-<ver>/promtool
#     built from the Prometheus Go module with the machine's `go`;
#   ${BACKUP_SYNC_CACHE:-$HOME/.cache/backup-sync}/crds/prometheus-operator-<ver>/
#     monitoring.coreos.com_prometheusrules.yaml
#     the PrometheusRule CRD, from the Prometheus Operator's Go module (its example/ folder),
#     for the server-side check of the rendered rule.
# Does nothing for what is already there. If PROMTOOL_BIN names an executable, that one is
# used and nothing is built. The last stdout line is the path of promtool; logs go to stderr.
# A cold promtool build costs ~215 CPU-seconds (8 min on 2 shared, busy cores with the
# modules already downloaded; 13 min when ~1 GB of modules is downloaded too).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "${repo_root}/hack/versions.env"
# shellcheck source=lib/gobuild.sh
source "${repo_root}/hack/lib/gobuild.sh"
: "${PROMETHEUS_VERSION:?missing in hack/versions.env}"
: "${PROMETHEUS_OPERATOR_VERSION:?missing in hack/versions.env}"

crd=monitoring.coreos.com_prometheusrules.yaml
crd_dir="${cache_root}/crds/prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}"
if [[ ! -f "${crd_dir}/${crd}" ]]; then
  module_dir="$(go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "${crd_dir}"
  install -m 0644 "${module_dir}/example/prometheus-operator-crd/${crd}" "${crd_dir}/${crd}.tmp"
  mv -f "${crd_dir}/${crd}.tmp" "${crd_dir}/${crd}"
  log "PrometheusRule CRD ${PROMETHEUS_OPERATOR_VERSION} in ${crd_dir}"
fi

if [[ -n "${PROMTOOL_BIN:-}" ]]; then
  if [[ -x "${PROMTOOL_BIN}" ]]; then
    log "using PROMTOOL_BIN=${PROMTOOL_BIN}"
    echo "${PROMTOOL_BIN}"
    exit 0
  fi
  log "PROMTOOL_BIN=${PROMTOOL_BIN} is not executable; building instead"
fi

# remove_all_sd leaves out the optional service discoveries (cloud SDKs among them), which
# `promtool check/test rules` never uses. The version stamps are those of Prometheus's
# .promu.yml (module v0.3XX.Y is release 3.XX.Y).
promtool_flags() {
  local v=github.com/prometheus/common/version release="${PROMETHEUS_VERSION#v0.}"
  export GOFLAGS="${GOFLAGS} -tags=remove_all_sd"
  ldflags+=" -X ${v}.Version=${release:0:1}.${release:1} -X ${v}.Branch=HEAD"
}

bin_dir="${cache_root}/bin/prometheus-${PROMETHEUS_VERSION}"
go_build "${bin_dir}" promtool github.com/prometheus/prometheus "${PROMETHEUS_VERSION}" \
  github.com/prometheus/prometheus/cmd/promtool promtool_flags
echo "${bin_dir}/promtool"
