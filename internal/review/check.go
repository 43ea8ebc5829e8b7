package review

import (
	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
)

// maxEvents bounds one read of events.
const maxEvents = 10_000

// check refuses an event the stores do not keep: an Other event, or one
// whose fields are out of the bounds Agora's own are in.
func check(e Event) error {
	switch {
	case !Kept(e.Kind):
		return apperr.New(apperr.Invalid, "review: an event of kind %q is not kept", e.Kind)
	case e.NoticeID == "" || len(e.NoticeID) > 256:
		return apperr.Field("noticeId", "must be 1 to 256 bytes")
	case e.Project == "" || len(e.Project) > 64:
		return apperr.Field("project", "must be 1 to 64 bytes")
	case len(e.Channel) > 64:
		return apperr.Field("channel", "is longer than Agora's 64 bytes")
	case e.At.IsZero():
		return apperr.Field("ts", "is missing")
	case (e.Kind == agora.Joined) != (e.Explained != nil):
		return apperr.New(apperr.Internal, "review: a join is kept with whether it was explained, and only a join")
	}
	return nil
}
