#!/bin/sh
# run.sh [saturation|fixedrate|overload]: the issuance load benchmarks.
#   saturation (default): the broker's full path against the seed floor,
#     side by side under wrk (TestLoadVsSeedfloor).
#   fixedrate: each server's maximum, then half of it held with vegeta on
#     production-like Postgres, second by second (TestFixedRate).
#   overload: ten times the sustainable concurrency, then recovery
#     (TestOverload).
# Installs wrk first if it is missing (needs root). The knobs are environment
# variables: BROKER_LOAD_DURATION (15s), BROKER_LOAD_ROUNDS (3),
# BROKER_LOAD_CONNECTIONS (50), BROKER_LOAD_FIXED_DURATION (60s),
# BROKER_LOAD_OVERLOAD_CONNECTIONS (500), BROKER_LOAD_OVERLOAD_DURATION (30s),
# BROKER_LOAD_MAX_WAITING (unset); see each test's doc comment.
set -eu
case "${1:-saturation}" in
saturation) test=TestLoadVsSeedfloor ;;
fixedrate) test=TestFixedRate ;;
overload) test=TestOverload ;;
*)
	echo "usage: $0 [saturation|fixedrate|overload]" >&2
	exit 2
	;;
esac
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: wrk is missing; install it (apt-get install wrk) or run this as root" >&2
		exit 1
	fi
	apt-get update -qq && apt-get install -y -qq wrk
fi
BROKER_LOAD=1 exec go test -v -count=1 -timeout 30m -run "^$test\$" ./bench/load/
