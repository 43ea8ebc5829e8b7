// Package audit owns the issuance log: one tamper-evident record per token
// decision, written durably (group commit) before the broker answers, plus the
// auditor's queries, export and chain verification.
// It must never store, log or return a bearer or Agora token: only its keyed fingerprint.
package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	xtlog "golang.org/x/mod/sumdb/tlog"
)

// Decision is the outcome a record documents.
type Decision string

// The decisions the log records.
const (
	DecisionGranted Decision = "granted" // a token was minted
	DecisionDenied  Decision = "denied"  // policy refused the role on the channel
	DecisionInvalid Decision = "invalid" // the request was malformed or out of range
)

// Services a record may name.
const (
	ServiceRTC     = "rtc"
	ServiceRTM     = "rtm"
	ServiceRTCRTM  = "rtc+rtm"
	ServiceChat    = "chat"
	ServiceChatApp = "chat-app"
)

// Hash is a chain link: HMAC-SHA256 under a chain key.
type Hash [32]byte

// String returns h in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h as lowercase hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads the hex form MarshalText writes (a record of the
// API, read by the CLI).
func (h *Hash) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(h) {
		return fmt.Errorf("audit: a hash is %d hexadecimal digits, not %d", 2*len(h), len(b))
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// Record is one decision in the issuance log. Seq, KeyID, PrevHash and Hash
// are assigned by the log when the record is committed; anything the caller
// puts there is ignored.
type Record struct {
	Seq              int64
	Time             time.Time // decision time; the log sets it when zero. Kept to the microsecond.
	RequestID        string
	Issuer           string
	Subject          string
	Account          string
	UID              uint32 // the caller's Agora uid; 0 when none is bound
	Groups           []string
	Service          string // ServiceRTC, ServiceRTM, ServiceRTCRTM, or "" when unknown
	Channel          string
	Role             string
	RequestedTTL     time.Duration // whole seconds; 0 when not given
	GrantedTTL       time.Duration // whole seconds; 0 when nothing was granted
	Decision         Decision
	Reason           string
	Rule             string // the matched policy rule, as text
	PolicyVersion    int64
	ClientIP         string
	UserAgent        string // at most MaxUserAgent bytes are kept
	TokenFingerprint string // Log.Fingerprint of the minted token; never the token
	KeyID            string // KeyID of the audit key that linked the record; "" for records written before key ids
	PrevHash         Hash
	Hash             Hash
	// TraceID is the W3C trace id (32 hex digits) of the request, "" when it
	// had none. It is where to look, not what was decided: not part of the
	// hash chain.
	TraceID string
	// Project is the Agora project the request was for ("default" when the
	// broker has one), and AppID the App ID that signed the token ("" in
	// records written before it was recorded). Not part of the hash chain
	// yet (see migration 010).
	Project, AppID string
}

// recordJSON is Record's wire form, shared by JSON export and the HTTP API.
type recordJSON struct {
	Seq              int64     `json:"seq"`
	Time             time.Time `json:"time"`
	RequestID        string    `json:"request_id"`
	Issuer           string    `json:"issuer"`
	Subject          string    `json:"subject"`
	Account          string    `json:"account"`
	UID              uint32    `json:"uid,omitempty"`
	Groups           []string  `json:"groups"`
	Service          string    `json:"service"`
	Channel          string    `json:"channel"`
	Role             string    `json:"role"`
	RequestedTTL     int64     `json:"requested_ttl_seconds"`
	GrantedTTL       int64     `json:"granted_ttl_seconds"`
	Decision         Decision  `json:"decision"`
	Reason           string    `json:"reason"`
	Rule             string    `json:"rule"`
	PolicyVersion    int64     `json:"policy_version"`
	ClientIP         string    `json:"client_ip"`
	UserAgent        string    `json:"user_agent"`
	TokenFingerprint string    `json:"token_fingerprint"`
	KeyID            string    `json:"key_id"`
	PrevHash         Hash      `json:"prev_hash"`
	Hash             Hash      `json:"hash"`
	TraceID          string    `json:"trace_id,omitempty"`
	Project          string    `json:"project"`
	AppID            string    `json:"app_id"`
}

// MarshalJSON encodes r with snake_case names, TTLs in seconds and hashes in hex.
func (r Record) MarshalJSON() ([]byte, error) {
	groups := r.Groups
	if groups == nil {
		groups = []string{}
	}
	return json.Marshal(recordJSON{
		Seq: r.Seq, Time: r.Time, RequestID: r.RequestID, Issuer: r.Issuer,
		Subject: r.Subject, Account: r.Account, UID: r.UID, Groups: groups,
		Service: r.Service, Channel: r.Channel, Role: r.Role,
		RequestedTTL: int64(r.RequestedTTL / time.Second), GrantedTTL: int64(r.GrantedTTL / time.Second),
		Decision: r.Decision, Reason: r.Reason, Rule: r.Rule, PolicyVersion: r.PolicyVersion,
		ClientIP: r.ClientIP, UserAgent: r.UserAgent, TokenFingerprint: r.TokenFingerprint,
		KeyID: r.KeyID, PrevHash: r.PrevHash, Hash: r.Hash, TraceID: r.TraceID,
		Project: r.Project, AppID: r.AppID,
	})
}

// Filter selects records for Search and Export. Zero fields match everything.
type Filter struct {
	Issuer  string // exact issuer URL (a subject is unique only within its issuer)
	Subject string
	Account string
	UID     *uint32
	Channel string // exact name, or a pattern where '*' (the only wildcard) matches any run of characters
	Project string // exact name of the Agora project
	// Projects, when not nil, keeps only the records of these projects (an
	// auditor whose right covers only some).
	Projects []string
	Decision Decision // "", DecisionGranted, DecisionDenied or DecisionInvalid
	// RequestID is the request's id exactly; it needs From and To at most
	// a day apart (the log is not indexed by it).
	RequestID string
	From      time.Time // inclusive
	To        time.Time // exclusive
	Limit     int       // Search: page size, 0 means DefaultLimit, at most MaxLimit. Export: 0 means all.
	Cursor    string    // Search only: Page.NextCursor of the previous page
}

// Page is one page of Search results, newest first. NextCursor is empty on the last page.
type Page struct {
	Records    []Record
	NextCursor string
}

// Problem kinds reported by Verify.
const (
	ProblemModified = "modified" // a record's content or hash no longer matches its chain link
	ProblemDeleted  = "deleted"  // records are missing: a seq gap, a broken prev_hash link, or a truncated tail
	ProblemInserted = "inserted" // a record that was never part of the chain
	// ProblemUnknownKey: records or the head name a key id that is not
	// configured, so they cannot be checked until that (previous) key is.
	ProblemUnknownKey = "unknown_key"
)

// Problem is one break in the chain. Seq is the record at fault; for
// ProblemDeleted it is the first missing seq.
type Problem struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Report is the result of Verify. Problems lists the first MaxProblems breaks in seq order.
type Report struct {
	OK       bool      `json:"ok"`
	Records  int64     `json:"records"`
	Problems []Problem `json:"problems"`
	// TreeSize is how many records the transparency log's tree covers
	// (fewer than Records only while the previous release appends, during a
	// rolling upgrade, until this release's writers catch up).
	TreeSize int64 `json:"treeSize"`
	// From is where an incremental verification started: records up to it
	// were not read again (VerifyFrom); 0 for a full run. Records counts
	// the records read.
	From int64 `json:"from"`
	// Redacted counts the records read whose personal fields were dropped
	// past the retention period (BROKER_AUDIT_RETENTION), before
	// RedactedBefore: their content can no longer be checked, but they hold
	// their place in the chain and the tree, which are.
	Redacted       int64     `json:"redacted"`
	RedactedBefore time.Time `json:"redactedBefore,omitzero"`
}

// Bucket counts decisions in [Start, Start+bucket width).
type Bucket struct {
	Start   time.Time `json:"start"`
	Granted int       `json:"granted"`
	Denied  int       `json:"denied"`
	Invalid int       `json:"invalid"`
}

// Log is the issuance log. Postgres is the production implementation; Memory
// serves `broker dev` and tests. Both behave identically. Errors are
// *apperr.Error values of the kinds each method names.
type Log interface {
	// Append commits r (bounded and cleaned first) and returns it with Seq and
	// hashes assigned. It returns only once the record is durable. Errors:
	// Invalid for a record no transport builds (unknown decision or service,
	// TTL out of range); Unavailable when it cannot commit (the caller must
	// not hand out a token), wrapping the caller's ctx error when ctx ended.
	Append(ctx context.Context, r Record) (Record, error)
	// Search returns records matching f, newest first, one page at a time.
	// Errors: Invalid naming the bad filter field; Unavailable.
	Search(ctx context.Context, f Filter) (Page, error)
	// Export streams every record matching f, oldest first, as "csv" or
	// "jsonl". Errors: Invalid (filter, format); Unavailable; w's own error.
	Export(ctx context.Context, f Filter, format string, w io.Writer) error
	// Lookup returns the records whose token fingerprint matches token under
	// the current or any previous audit key, oldest first. Errors: Invalid
	// (empty token); Unavailable.
	Lookup(ctx context.Context, token string) ([]Record, error)
	// Verify walks the whole chain and reports every modified, deleted or
	// inserted record, checking each under the audit key it names. A broken
	// chain is a Report, not an error. Errors: Unavailable.
	Verify(ctx context.Context) (Report, error)
	// VerifyFrom is Verify of the records after from only, the first linked
	// to record from's stored hash and the tree continued from its stored
	// right edge: what is new since a verified point (VerifyIncremental).
	// Errors: Invalid; NotFound when from is past the log or the tree;
	// Unavailable.
	VerifyFrom(ctx context.Context, from int64) (Report, error)
	// Stats counts decisions per bucket from since until now. Errors: Invalid
	// (no since, a bucket under 1s or too many buckets); Unavailable.
	Stats(ctx context.Context, since time.Time, bucket time.Duration) ([]Bucket, error)
	// Fingerprint returns the fingerprint under which a token is recorded now
	// (under the current audit key).
	Fingerprint(token string) string
	// TreeSize is how many records (from seq 1) the transparency log's tree
	// covers; TreeHashes reads its stored hashes (golang.org/x/mod/sumdb/tlog
	// layout) and Leaves the leaves (Leaf) of records start+1 … end, at most
	// MaxLeaves. Errors: Invalid (a bad range); NotFound (past the end);
	// Unavailable.
	TreeSize(ctx context.Context) (int64, error)
	// Checkpoint returns the latest signed checkpoint (a signed note with
	// any witness cosignatures). Errors: NotFound before the first;
	// Unavailable.
	Checkpoint(ctx context.Context) ([]byte, error)
	TreeHashes(ctx context.Context, indexes []int64) ([]xtlog.Hash, error)
	Leaves(ctx context.Context, start, end int64) ([][]byte, error)
	// Decisions hands fn every distinct (caller, project, channel, role,
	// decision) of the granted and denied channel decisions since since,
	// with its count (a policy plan replays them). Errors: Unavailable; fn's.
	Decisions(ctx context.Context, since time.Time, fn func(DecisionCount) error) error
	// Maintain keeps the log's storage: it makes the months ahead
	// (Postgres) and, when retention is not zero, drops the personal fields
	// of the records of every month that ended more than retention ago
	// (Maintained says what it did). Replicas may all call it. Errors:
	// Unavailable.
	Maintain(ctx context.Context, retention time.Duration) (Maintained, error)
	// Close stops accepting records and waits for pending ones to finish.
	Close() error
}
