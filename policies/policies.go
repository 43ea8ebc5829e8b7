// Package policies holds the broker's Casbin model and an example policy,
// embedded so that the binary needs no files on disk. It holds data only:
// internal/policy owns what the model means and must be changed with it.
package policies

import _ "embed"

// Model is the Casbin model (model.conf) that internal/policy loads.
//
//go:embed model.conf
var Model string

// ExampleCSV is a small example policy in the import format (header
// subject,channel,role,effect,maxTtlSeconds,project) that `broker dev`
// loads.
//
//go:embed example.csv
var ExampleCSV string
