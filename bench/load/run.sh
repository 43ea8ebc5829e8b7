#!/bin/sh
# run.sh: the issuance load benchmark, broker (full path) against the seed
# floor, side by side. Installs wrk first if it is missing (needs root).
# BROKER_LOAD_DURATION (15s), BROKER_LOAD_ROUNDS (3) and BROKER_LOAD_CONNECTIONS
# (50) change the runs.
set -eu
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: wrk is missing; install it (apt-get install wrk) or run this as root" >&2
		exit 1
	fi
	apt-get update -qq && apt-get install -y -qq wrk
fi
BROKER_LOAD=1 exec go test -v -count=1 -timeout 30m -run TestLoadVsSeedfloor ./bench/load/
