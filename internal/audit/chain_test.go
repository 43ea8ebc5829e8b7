package audit

import (
	"bytes"
	"testing"
	"time"
)

func TestCanonical_FieldBoundariesAreUnambiguous(t *testing.T) {
	base := rec("alice", "room", 0)
	for _, c := range []struct {
		name string
		a, b func(*Record)
	}{
		{"SubjectAccount",
			func(r *Record) { r.Subject, r.Account = "ab", "c" },
			func(r *Record) { r.Subject, r.Account = "a", "bc" }},
		{"GroupsSplit",
			func(r *Record) { r.Groups = []string{"ab"} },
			func(r *Record) { r.Groups = []string{"a", "b"} }},
		{"GroupIntoChannel",
			func(r *Record) { r.Groups, r.Service, r.Channel = []string{"x"}, "", "" },
			func(r *Record) { r.Groups, r.Service, r.Channel = nil, "", "x" }},
		{"Seq",
			func(r *Record) { r.Seq = 1 },
			func(r *Record) { r.Seq = 2 }},
		{"TTLs",
			func(r *Record) { r.RequestedTTL, r.GrantedTTL = time.Hour, 0 },
			func(r *Record) { r.RequestedTTL, r.GrantedTTL = 0, time.Hour }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := base, base
			c.a(&a)
			c.b(&b)
			if bytes.Equal(canonical(&a), canonical(&b)) {
				t.Error("different records share an encoding")
			}
		})
	}
}

func TestRecordHash_CoversPrevHashKeyIDAndUsesChainKey(t *testing.T) {
	k1, _ := deriveKeys(testKey, "audit_key")
	k2, _ := deriveKeys(bytes.Repeat([]byte("z"), 32), "audit_key")
	r := rec("alice", "room", 0)
	k1.link(&r, 1, genesis)
	if r.KeyID != k1.id {
		t.Errorf("linked record names key id %q; want %q", r.KeyID, k1.id)
	}
	other := r
	other.PrevHash[0] ^= 1
	if k1.recordHash(&other) == r.Hash {
		t.Error("hash ignores prev_hash")
	}
	if k2.recordHash(&r) == r.Hash {
		t.Error("hash does not depend on the key")
	}
	for _, id := range []string{"", k2.id} {
		other := r
		other.KeyID = id
		if k1.recordHash(&other) == r.Hash {
			t.Errorf("hash unchanged with key id %q in place of %q", id, r.KeyID)
		}
	}
}

func TestHeadMAC_CoversKeyID(t *testing.T) {
	k, _ := deriveKeys(testKey, "audit_key")
	h := Hash{1}
	if k.headMAC(1, h, k.id) == k.headMAC(1, h, "") || k.headMAC(1, h, k.id) == k.headMAC(1, h, KeyID(rotatedKey)) {
		t.Error("head MAC does not depend on the key id")
	}
}

func TestVerify_UnconfiguredKeyIsReportedOncePerRun(t *testing.T) {
	m, _ := NewMemory(testKey)
	mustAppend(t, m, rec("a", "r", 0), rec("b", "r", 1), rec("c", "r", 2))
	other, _ := newKeyring(rotatedKey, nil)
	v := newVerifier(other, m.head)
	for _, r := range m.records {
		v.add(storedRecord{Record: r})
	}
	rep := v.finish()
	id := KeyID(testKey)
	want := []Problem{
		{Seq: 1, Kind: ProblemUnknownKey, Detail: "records 1 to 3 were linked with key id " + id + ", which is not configured"},
		{Seq: 3, Kind: ProblemUnknownKey, Detail: "the chain head was MACed with key id " + id + ", which is not configured"},
	}
	if rep.OK || len(rep.Problems) != len(want) || rep.Problems[0] != want[0] || rep.Problems[1] != want[1] {
		t.Errorf("Verify under another key = %+v; want %+v", rep, want)
	}
}

func TestVerify_CapsProblems(t *testing.T) {
	m, _ := NewMemory(testKey)
	for i := range MaxProblems + 10 {
		mustAppend(t, m, rec("a", "r", i))
	}
	for i := range m.records {
		m.records[i].Channel = "tampered"
	}
	rep, _ := m.Verify(t.Context())
	if len(rep.Problems) != MaxProblems || rep.Records != MaxProblems+10 {
		t.Errorf("got %d problems over %d records; want %d over %d", len(rep.Problems), rep.Records, MaxProblems, MaxProblems+10)
	}
}

func TestVerify_DetectsTamperedHead(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(m *Memory)
		kind   string
		seq    int64
	}{
		{"HeadMACAltered", func(m *Memory) { m.head.mac[0] ^= 1 }, ProblemModified, 3},
		{"HeadRolledBackAndTailDeleted", func(m *Memory) {
			m.records = m.records[:2]
			m.head.seq, m.head.hash = 2, m.records[1].Hash
		}, ProblemModified, 2},
		{"HeadMissing", func(m *Memory) { m.head = head{} }, ProblemDeleted, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := NewMemory(testKey)
			mustAppend(t, m, rec("a", "r", 0), rec("b", "r", 1), rec("c", "r", 2))
			c.tamper(m)
			rep, _ := m.Verify(t.Context())
			if ps := chainOnly(rep.Problems); rep.OK || len(ps) == 0 || ps[0].Kind != c.kind || ps[0].Seq != c.seq {
				t.Errorf("Verify = %+v; want %s at %d", rep, c.kind, c.seq)
			}
		})
	}
}
