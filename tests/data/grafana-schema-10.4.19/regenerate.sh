#!/bin/sh
# Regenerates this folder's JSON schemas from the TypeScript types that
# Grafana generates from its CUE schemas and publishes as @grafana/schema.
# Run by hand at development time (it needs npm and the npm registry); the
# tests read the files it writes and never run it. SOURCE says what each
# file is, and the sha256 lines this script prints go at its end.
#
# Usage: tests/data/grafana-schema-10.4.19/regenerate.sh
set -eu

cd "$(dirname "$0")"

GRAFANA_SCHEMA=10.4.19
# The tarball's integrity as the npm registry gives it (npm checks the
# download against it; this script checks that it is the one SOURCE names).
INTEGRITY=sha512-4kH+Ryiy529fBDZe97qnGrtpmESYaNX8/ef8WsvsUbP1ZheopUkd18r/+VTc18tX7ujOpuThXCdOBDsptj3qJw==
# 2.4.0 is the last ts-json-schema-generator that runs on Node 20 (Debian's
# nodejs here); it wants TypeScript 5.8 (TypeScript 7 is not a compiler it reads).
GENERATOR=2.4.0
TYPESCRIPT=5.8.3

work=$(mktemp -d)
# Removes the npm install on any exit, success included.
trap 'rm -rf "$work"' EXIT
echo '{"private": true}' >"$work/package.json"
(cd "$work" && npm install --ignore-scripts --no-audit --no-fund --save-exact \
    "@grafana/schema@$GRAFANA_SCHEMA" "ts-json-schema-generator@$GENERATOR" "typescript@$TYPESCRIPT" >&2)
got=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/@grafana/schema"].integrity)' \
    "$work/package-lock.json")
if [ "$got" != "$INTEGRITY" ]; then
    echo "regenerate: @grafana/schema@$GRAFANA_SCHEMA is $got, SOURCE names $INTEGRITY" >&2
    exit 1
fi

raw="$work/node_modules/@grafana/schema/dist/esm/raw"
# One schema per type, unchanged: interfaces closed (additionalProperties:
# false, the generator's default), Record<string, unknown> left open.
generate() {
    "$work/node_modules/.bin/ts-json-schema-generator" --path "$raw/$1" --type "$2" --out "$3"
}
generate dashboard/x/dashboard_types.gen.d.ts Dashboard dashboard.schema.json
generate composable/prometheus/dataquery/x/PrometheusDataQuery_types.gen.d.ts PrometheusDataQuery \
    prometheus-dataquery.schema.json
generate composable/stat/panelcfg/x/StatPanelCfg_types.gen.d.ts Options stat-options.schema.json
generate composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts Options timeseries-options.schema.json
generate composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts FieldConfig \
    timeseries-fieldconfig.schema.json

sha256sum ./*.schema.json | sed 's|  \./|  |'
