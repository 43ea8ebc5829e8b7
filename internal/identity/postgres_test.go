package identity

import (
	"testing"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestPostgres_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) (Store, func(func() uint32)) {
		p := NewPostgres(pgtest.New(t).Pool())
		return p, func(next func() uint32) { p.next = next }
	})
}
