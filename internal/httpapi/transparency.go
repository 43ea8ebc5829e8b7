package httpapi

import (
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/tlog"
)

// Transparency is what the HTTP layer serves of the issuance log as a
// transparency log (c2sp.org/tlog-tiles under /log/): the latest checkpoint,
// the verifier key, hash tiles (public: hashes reveal nothing) and entry
// bundles (personal data: read on api:audit in every project, unless
// PublicEntries).
type Transparency struct {
	Log audit.Log
	// Origin and VerifierKey are the log's, "" when no checkpoint is signed.
	Origin, VerifierKey string
	PublicEntries       bool
}

// transparencyRoutes mounts /log/… on r.
func transparencyRoutes(r chi.Router, d Deps) {
	t := d.Transparency
	if t.Log == nil {
		return
	}
	r.Get("/log/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		note, err := t.Log.Checkpoint(r.Context())
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(note)
	})
	r.Get("/log/key", func(w http.ResponseWriter, r *http.Request) {
		if t.VerifierKey == "" {
			problem.Write(w, r, apperr.New(apperr.NotFound, "this broker signs no checkpoints (BROKER_LOG_SIGNING_KEY is not set)"))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, t.VerifierKey+"\n")
	})
	var entries http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveTile(w, r, t, true) })
	if !t.PublicEntries && d.Authenticate != nil && d.Policies != nil {
		entries = bearerOnly(d.Authenticate)(requireAll(d.Policies, policy.ObjectAudit, policy.Read)(entries))
	} else if !t.PublicEntries {
		entries = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			problem.Write(w, r, apperr.New(apperr.NotFound, "entry tiles are served to auditors only, and this broker has none"))
		})
	}
	// One route for every tile: hash tiles (public) and entry bundles.
	r.Get("/log/tile/*", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/log/tile/entries/") {
			entries.ServeHTTP(w, r)
			return
		}
		serveTile(w, r, t, false)
	})
}

// requireAll lets a request through only if the caller holds action on
// object in every project: entry bundles hold every project's records.
func requireAll(p *policy.Engine, object string, action policy.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, _, ok := caller(r); ok && p.Can(c, policy.AllProjects, object, action) {
				next.ServeHTTP(w, r)
				return
			}
			problem.Write(w, r, apperr.New(apperr.Forbidden, "entry tiles hold every project's records: they need the %s right on %s in every project (\"*\")", action, object))
		})
	}
}

// serveTile serves a hash tile or an entry bundle (c2sp.org/tlog-tiles):
// only tiles the tree already has, full ones cacheable forever.
func serveTile(w http.ResponseWriter, r *http.Request, t Transparency, entries bool) {
	path := strings.TrimPrefix(r.URL.Path, "/log/")
	tile, err := tlog.ParseTilePath(path)
	if err != nil || (tile.L == tlog.EntryLevel) != entries {
		problem.Write(w, r, apperr.New(apperr.NotFound, "not a tile path (c2sp.org/tlog-tiles)"))
		return
	}
	size, err := t.Log.TreeSize(r.Context())
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	level := max(tile.L, 0)
	// The tile's last hash covers leaves up to (N·256 + W) << (8·L); a tile
	// index past any tree (whose end would overflow) is simply not there.
	end := tile.N*tlog.TileWidth + int64(tile.W)
	if tile.N > (math.MaxInt64-tlog.TileWidth)/tlog.TileWidth || end > size>>(uint(level)*tlog.TileHeight) {
		problem.Write(w, r, apperr.New(apperr.NotFound, "the tree (%d records) has no such tile yet", size))
		return
	}
	var body []byte
	if entries {
		var leaves [][]byte
		if leaves, err = t.Log.Leaves(r.Context(), tile.N*tlog.TileWidth, end); err == nil {
			body, err = tlog.EntryBundle(leaves)
		}
	} else {
		body, err = tlog.HashTile(tile, hashReader{r: r, log: t.Log})
	}
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	switch {
	case entries && !t.PublicEntries:
		// Personal data, served to an auditor: no shared cache may keep it.
		w.Header().Set("Cache-Control", "private, no-store")
	case tile.W == tlog.TileWidth:
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(body)
}

// hashReader reads the log's stored hashes for one request.
type hashReader struct {
	r   *http.Request
	log audit.Log
}

func (h hashReader) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	return h.log.TreeHashes(h.r.Context(), indexes)
}

// proveRecord serves GET /v1/audit/records/{seq}/proof: the c2sp.org/
// tlog-proof of the record (its leaf as the proof's extra data) against the
// latest checkpoint, for a caller who may read the record's project.
func proveRecord(p *policy.Engine, l audit.Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseInt(chi.URLParam(r, "seq"), 10, 64)
		if err != nil || seq < 1 {
			problem.Write(w, r, apperr.Field("seq", "must be a record's sequence number (1 or more)"))
			return
		}
		projects, err := scope(p, r, policy.ObjectAudit, policy.Read, "")
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		proof, err := audit.Prove(r.Context(), l, seq)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if !visibleLeaf(proof.Extra, projects) {
			problem.Write(w, r, apperr.New(apperr.NotFound, "no record %d that you may read", seq))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="record-`+strconv.FormatInt(seq, 10)+`.tlog-proof"`)
		w.Write(proof.Marshal())
	}
}

// visibleLeaf reports whether the record a leaf holds belongs to one of
// projects (nil: every project).
func visibleLeaf(leaf []byte, projects []string) bool {
	if projects == nil {
		return true
	}
	rec, err := audit.ParseLeaf(leaf)
	return err == nil && slices.Contains(projects, rec.Project)
}
