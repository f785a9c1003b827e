#!/bin/bash
# promtool_config_test: the shipped Prometheus config and alert rules must load.
# Usage: promtool_check.sh PROMTOOL DEPLOY_PROMETHEUS_DIR
set -euo pipefail
promtool=$1 dir=$2
"$promtool" check config "$dir/prometheus.yml"   # also checks the rule_files it names
"$promtool" check rules "$dir/alerts.yml"
# promtool accepts an empty group file; the rules the alerts_test.yml cases rely on must be there.
for alert in DtmCoordinatorDown DtmNoWorkers DtmTasksFailing DtmLeaseExpiriesRising DtmRedisUnreachable DtmJobStalled; do
  grep -q "alert: $alert\$" "$dir/alerts.yml" || { echo "alerts.yml: no alert $alert" >&2; exit 1; }
done
