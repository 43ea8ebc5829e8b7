// Package load holds the issuance load benchmark: the broker's full path (a
// real RS256 ID token from Dex, Postgres policy, the issuance log with fsync on)
// against the seed floor, side by side under wrk, with a record-count check.
// It ships nothing the broker runs, and must never run unless BROKER_LOAD=1:
// it is a measurement harness, not one of the suite's assertions.
//
// Run it with bench/load/run.sh (see TestLoadVsSeedfloor for the knobs).
package load
