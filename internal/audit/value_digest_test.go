package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// randomText is n bytes of random lowercase hex: text that does not
// compress.
func randomText(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// randomGroups is n groups of the most bytes a group keeps, random.
func randomGroups(n int) []string {
	g := make([]string, n)
	for i := range g {
		g[i] = randomText(maxGroup)
	}
	return g
}

// TestPostgres_IncompressibleGroupsAreRecorded: a caller in 64 groups of
// 255 random bytes (a groups value of 16 kB that does not compress, as
// Azure AD's group ids do not), and one in more groups than a record keeps,
// are recorded, read back as they were stored, and verify; a later record
// with the same groups uses the same dictionary row. Migration 015's unique
// index on (kind, value) refused such a value (an index entry is at most
// 2,704 bytes), so every append of such a caller failed.
func TestPostgres_IncompressibleGroupsAreRecorded(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	l := newPostgres(t, db, PostgresOptions{})
	azure := rec("azure", "room", 1)
	azure.Groups = randomGroups(maxGroups)
	wide := rec("wide", "room", 2)
	wide.Groups = randomGroups(maxGroups + 36)
	again := rec("azure", "room", 3)
	again.Groups = slices.Clone(azure.Groups)
	var seqs []int64
	for _, r := range []Record{azure, wide, again} {
		got, err := l.Append(ctx, r)
		if err != nil {
			t.Fatalf("Append(%s, %d groups): %v", r.Subject, len(r.Groups), err)
		}
		seqs = append(seqs, got.Seq)
	}

	wantWide := append(slices.Clone(wide.Groups[:maxGroups-1]), fmt.Sprintf("…[%d more groups]", len(wide.Groups)-maxGroups+1))
	reader := newPostgres(t, db, PostgresOptions{}) // an empty value cache: values come from the dictionary
	for _, c := range []struct {
		subject string
		want    [][]string // newest first
	}{{"azure", [][]string{azure.Groups, azure.Groups}}, {"wide", [][]string{wantWide}}} {
		page, err := reader.Search(ctx, Filter{Subject: c.subject})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != len(c.want) {
			t.Fatalf("Search(%s) = %d records, want %d", c.subject, len(page.Records), len(c.want))
		}
		for i, r := range page.Records {
			if !slices.Equal(r.Groups, c.want[i]) {
				t.Errorf("Search(%s)[%d]: %d groups read back, not the %d stored", c.subject, i, len(r.Groups), len(c.want[i]))
			}
		}
	}

	var ids []int32
	if err := db.Pool().QueryRow(ctx, "SELECT array_agg(groups ORDER BY seq) FROM issuance_log_record WHERE seq = ANY($1)", seqs).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != ids[2] || ids[0] == ids[1] {
		t.Errorf("groups' dictionary ids %v: want the first and third records to share theirs, and the second another", ids)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 3 {
		t.Errorf("Verify = %+v, %v; want ok with 3 records", rep, err)
	}
}

// TestPostgres_DictionaryHoldsAnyValue: a context's fields are bounded (to
// about 1.2 kB), and what JSON escaping adds to them compresses (2 kB at
// most, measured), so no append gives one over the btree limit; the
// dictionary holds one of any size all the same, stored through
// issuance_log_store and read back.
func TestPostgres_DictionaryHoldsAnyValue(t *testing.T) {
	db := pgtest.New(t)
	r := rec("ctx", "room", 1)
	r.Seq, r.KeyID, r.Rule = 1, "k", randomText(20000)
	sqlTamperer{db}.insert(t, r)
	var rule string
	if err := db.Pool().QueryRow(context.Background(), "SELECT rule FROM issuance_log WHERE seq = 1").Scan(&rule); err != nil {
		t.Fatal(err)
	}
	if rule != r.Rule {
		t.Errorf("the rule read back is %d bytes, not the %d stored", len(rule), len(r.Rule))
	}
}
