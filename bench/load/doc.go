// Package load holds the issuance load benchmarks: the broker's full path (a
// real RS256 ID token from Dex, Postgres policy, the issuance log with fsync on)
// against the seed floor, side by side under wrk, with a record-count check
// (TestLoadVsSeedfloor); its latency at half its maximum rate under vegeta,
// on Postgres with production-like settings, second by second beside what
// Postgres and the log did (TestFixedRate); and its behaviour under ten times
// the concurrency it sustains (TestOverload). They ship nothing the broker
// runs, and must never run unless BROKER_LOAD=1: they are measurement
// harnesses, not the suite's assertions.
//
// Run them with bench/load/run.sh [saturation|fixedrate|overload] (see each
// test for its knobs).
package load
