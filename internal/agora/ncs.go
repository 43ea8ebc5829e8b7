package agora

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// SignatureV2Header carries Agora's HMAC-SHA256 signature of a notification.
const SignatureV2Header = "Agora-Signature-V2"

// MaxEventBytes bounds a notification body; Agora's channel events are a few
// hundred bytes.
const MaxEventBytes = 64 << 10

// VerifySignatureV2 reports whether header (the Agora-Signature-V2 value) is
// the HMAC-SHA256, in hex, of the raw body under the NCS secret. It refuses an
// empty secret and anything but 64 hex digits, and compares in constant time.
func VerifySignatureV2(secret, body []byte, header string) bool {
	if len(secret) == 0 || len(header) != 2*sha256.Size {
		return false
	}
	var got [sha256.Size]byte
	if _, err := hex.Decode(got[:], []byte(header)); err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(mac.Sum(nil), got[:])
}

// EventKind is what a channel event reports.
type EventKind string

// The kinds of event ParseEvent recognises; anything else is Other.
const (
	ChannelCreated   EventKind = "channel_created"   // 101: the first user joined
	ChannelDestroyed EventKind = "channel_destroyed" // 102: the last user left
	Joined           EventKind = "joined"            // 103, 105, 107
	Left             EventKind = "left"              // 104, 106, 108
	RoleChanged      EventKind = "role_changed"      // 111, 112: Role is the new role
	Other            EventKind = "other"             // another product or event type
)

// Role is a user's role in a channel, as a channel event reports it.
type Role string

// The roles of channel events; "" for events about the channel itself.
const (
	Broadcaster   Role = "broadcaster"   // live broadcasting profile, host
	Audience      Role = "audience"      // live broadcasting profile, audience
	Communication Role = "communication" // communication profile
)

// Event is one notification from Agora's NCS. The channel fields are set for
// the RTC channel events (product 1, event types 101–112); for Other events
// only the envelope is read.
type Event struct {
	NoticeID  string    // Agora's id of the notification; the same on a resend
	ProductID int       // 1 for RTC
	EventType int       // Agora's number for the event
	NotifyAt  time.Time // when Agora sent (or resent) the notification
	Kind      EventKind
	Role      Role
	Channel   string
	UID       uint32
	Account   string        // the user account, when the event carries one
	Platform  int           // Agora's platform number of the user's device
	ClientSeq int64         // orders the events of one user; larger is later
	At        time.Time     // when the event happened on Agora's server (second precision)
	Reason    int           // leaves: Agora's reason number
	Duration  time.Duration // leaves: how long the user was in the channel
}

// productRTC is the NCS product id of Real-Time Communication.
const productRTC = 1

var channelEvents = map[int]struct {
	kind EventKind
	role Role
}{
	101: {ChannelCreated, ""},
	102: {ChannelDestroyed, ""},
	103: {Joined, Broadcaster},
	104: {Left, Broadcaster},
	105: {Joined, Audience},
	106: {Left, Audience},
	107: {Joined, Communication},
	108: {Left, Communication},
	111: {RoleChanged, Broadcaster},
	112: {RoleChanged, Audience},
}

// ParseEvent reads a notification body. It does not check the signature:
// call VerifySignatureV2 on the same bytes first. Its errors are
// *apperr.Error: TooLarge over MaxEventBytes, Invalid for a body that is not
// the documented JSON.
func ParseEvent(body []byte) (Event, error) {
	if len(body) > MaxEventBytes {
		return Event{}, apperr.New(apperr.TooLarge, "agora: notification is %d bytes; at most %d are read", len(body), MaxEventBytes)
	}
	var n struct {
		NoticeID  *string         `json:"noticeId"`
		ProductID *int            `json:"productId"`
		EventType *int            `json:"eventType"`
		NotifyMs  *int64          `json:"notifyMs"`
		Payload   json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(body, &n); err != nil {
		return Event{}, apperr.Wrap(apperr.Invalid, err, "agora: notification is not the documented JSON")
	}
	if n.NoticeID == nil || *n.NoticeID == "" || n.EventType == nil || n.ProductID == nil {
		return Event{}, apperr.New(apperr.Invalid, "agora: notification lacks noticeId, productId or eventType")
	}
	e := Event{NoticeID: *n.NoticeID, ProductID: *n.ProductID, EventType: *n.EventType, Kind: Other}
	if n.NotifyMs != nil && *n.NotifyMs > 0 {
		e.NotifyAt = time.UnixMilli(*n.NotifyMs).UTC()
	}
	known, ok := channelEvents[e.EventType]
	if e.ProductID != productRTC || !ok {
		return e, nil // the caller decides what to do with it
	}
	e.Kind, e.Role = known.kind, known.role
	var p struct {
		ChannelName *string `json:"channelName"`
		UID         *uint64 `json:"uid"`
		Account     string  `json:"account"`
		Platform    int     `json:"platform"`
		ClientSeq   int64   `json:"clientSeq"`
		TS          int64   `json:"ts"`
		Reason      int     `json:"reason"`
		Duration    int64   `json:"duration"`
	}
	if len(n.Payload) == 0 {
		return Event{}, apperr.New(apperr.Invalid, "agora: event %d has no payload", e.EventType)
	}
	if err := json.Unmarshal(n.Payload, &p); err != nil {
		return Event{}, apperr.Wrap(apperr.Invalid, err, "agora: event payload is not the documented JSON")
	}
	if p.ChannelName == nil || *p.ChannelName == "" {
		return Event{}, apperr.New(apperr.Invalid, "agora: event %d has no channelName", e.EventType)
	}
	e.Channel = *p.ChannelName
	if e.Kind != ChannelCreated && e.Kind != ChannelDestroyed {
		if p.UID == nil || *p.UID > math.MaxUint32 {
			return Event{}, apperr.New(apperr.Invalid, "agora: event %d has no 32-bit uid", e.EventType)
		}
		e.UID = uint32(*p.UID)
	}
	e.Account, e.Platform, e.ClientSeq, e.Reason = p.Account, p.Platform, p.ClientSeq, p.Reason
	if p.TS > 0 {
		e.At = time.Unix(p.TS, 0).UTC()
	}
	if e.Kind == Left && p.Duration > 0 && p.Duration < math.MaxInt64/int64(time.Second) {
		e.Duration = time.Duration(p.Duration) * time.Second
	}
	return e, nil
}
