package httpapi

import (
	"context"
	"testing"

	"github.com/broker-dev/broker/internal/audit"
)

// Tile paths, well-formed or hostile, are served or refused with a 4xx:
// never a 5xx. Entry bundles take a global audit right; hash tiles none.
func TestTransparency_TilesAreServedOrRefusedPrecisely(t *testing.T) {
	f := newAPI(t, func(d *Deps) { d.Transparency = Transparency{Log: d.Audit} }, false)
	for i := range 300 {
		if _, err := f.log.Append(context.Background(), audit.Record{Decision: audit.DecisionDenied, Channel: "room", UID: uint32(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		path, bearer string
		status       int
	}{
		{"/log/tile/0/000", "", 200},
		{"/log/tile/0/001.p/44", "", 200},
		{"/log/tile/0/001.p/45", "", 404}, // leaf 300 does not exist
		{"/log/tile/1/000.p/1", "", 200},
		{"/log/tile/1/000.p/2", "", 404},
		{"/log/tile/0/x999/x999/x999/x999/x999/x999/999", "", 404},
		{"/log/tile/63/000.p/1", "", 404},
		{"/log/tile/0/000.p/0", "", 404},
		{"/log/tile/0/000.p/256", "", 404},
		{"/log/tile/0/../000", "", 404},
		{"/log/tile/entries/000", "", 401},
		{"/log/tile/entries/000", "bob;dev", 403},
		{"/log/tile/entries/000", "root;admins", 200},
		{"/log/tile/entries/x036/x028/x797/x018/x963/x968/x967", "root;admins", 404},
		{"/log/checkpoint", "", 404}, // nothing signed: no checkpointer here
		{"/log/key", "", 404},
	} {
		resp, _ := f.do(t, "GET", c.path, c.bearer, "")
		if resp.StatusCode != c.status {
			t.Errorf("GET %s as %q: %d, want %d", c.path, c.bearer, resp.StatusCode, c.status)
		}
	}
}
