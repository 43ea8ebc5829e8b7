// Package migrations holds the broker's SQL schema migrations, embedded into the
// binary so that `broker migrate up` needs no files on disk. Files are applied in
// the order of their numeric prefix; an applied file is never edited.
package migrations

import "embed"

// FS holds the migration files (NNN_name.sql).
//
//go:embed *.sql
var FS embed.FS
