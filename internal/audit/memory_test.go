package audit

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemory_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) (Log, tamperer) {
		m, err := NewMemory(testKey)
		if err != nil {
			t.Fatal(err)
		}
		mt := &memoryTamperer{m: m}
		m.FollowPolicy(mt.policy.Load)
		return m, mt
	})
}

// memoryTamperer edits a Memory's records directly, leaving its head alone
// unless told to set it. reopen moves it to the new Memory.
type memoryTamperer struct {
	m      *Memory
	policy atomic.Int64 // the committed policy version the log follows
}

func (mt *memoryTamperer) changePolicy(*testing.T) int64 { return mt.policy.Add(1) }

func (mt *memoryTamperer) makeMonth(*testing.T, time.Time) {}

func (mt *memoryTamperer) forgeRedaction(_ *testing.T, through int64) {
	mt.m.mu.Lock()
	defer mt.m.mu.Unlock()
	mt.m.redaction.through = through
}

func (mt *memoryTamperer) index(t *testing.T, seq int64) int {
	t.Helper()
	for i, r := range mt.m.records {
		if r.Seq == seq {
			return i
		}
	}
	t.Fatalf("no record %d", seq)
	return -1
}

func (mt *memoryTamperer) modify(t *testing.T, seq int64) {
	mt.m.records[mt.index(t, seq)].Channel += "x"
}

func (mt *memoryTamperer) modifyHash(t *testing.T, seq int64) {
	r := &mt.m.records[mt.index(t, seq)]
	r.Channel += "x"
	r.Hash[0] ^= 1
}

func (mt *memoryTamperer) remove(t *testing.T, seq int64) {
	i := mt.index(t, seq)
	mt.m.records = slices.Delete(mt.m.records, i, i+1)
}

func (mt *memoryTamperer) shift(t *testing.T, from int64) {
	for i := range mt.m.records {
		if mt.m.records[i].Seq >= from {
			mt.m.records[i].Seq++
		}
	}
}

func (mt *memoryTamperer) insert(t *testing.T, r Record) {
	i, _ := slices.BinarySearchFunc(mt.m.records, r.Seq, func(x Record, seq int64) int {
		return int(x.Seq - seq)
	})
	mt.m.records = slices.Insert(mt.m.records, i, r)
}

func (mt *memoryTamperer) setKeyID(t *testing.T, seq int64, id string) {
	mt.m.records[mt.index(t, seq)].KeyID = id
}

func (mt *memoryTamperer) setHead(t *testing.T, h head) { mt.m.head = h }

func (mt *memoryTamperer) reopen(t *testing.T, key []byte, previous ...[]byte) Log {
	m, err := NewMemory(key, previous...)
	if err != nil {
		t.Fatal(err)
	}
	m.records, m.hashes, m.head = slices.Clone(mt.m.records), slices.Clone(mt.m.hashes), mt.m.head
	m.FollowPolicy(mt.policy.Load)
	mt.m = m
	return m
}
