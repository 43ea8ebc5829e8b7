package pgtest

import (
	"context"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func tableExists(t *testing.T, d *DB, table string) bool {
	t.Helper()
	var ok bool
	err := d.Pool().QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok)
	if err != nil {
		t.Fatalf("query %s: %v", d.Name, err)
	}
	return ok
}

func TestNew_GivesMigratedDatabase(t *testing.T) {
	t.Parallel()
	d := New(t)
	for _, table := range []string{"casbin_rule", "policy_history", "identities", "issuance_log", "schema_version"} {
		if !tableExists(t, d, table) {
			t.Errorf("table %s missing in %s", table, d.Name)
		}
	}
}

func TestNewEmpty_GivesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	d := NewEmpty(t)
	if tableExists(t, d, "schema_version") {
		t.Errorf("schema_version exists in a database from NewEmpty")
	}
}
