package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/review"
)

// TestAgoraEvents_KeepsSignedChannelEventsOnce: a join signed with the
// project's NCS secret is kept, its resend is not kept twice; a forged,
// unsigned or oversized notification is refused; an event of another
// product is acknowledged and dropped.
func TestAgoraEvents_KeepsSignedChannelEventsOnce(t *testing.T) {
	secret := []byte("ncs-secret-for-tests")
	store := review.NewMemory()
	f := newAPI(t, func(d *Deps) {
		d.AgoraEvents = AgoraEvents{Secret: secret, Project: "default", Store: store, Log: d.Audit, MaxTTL: 24 * time.Hour}
	}, false)
	at := time.Now().Truncate(time.Second)
	join := fmt.Sprintf(`{"noticeId":"2000001428:4330:107","productId":1,"eventType":103,"notifyMs":%d,"sid":"s1",`+
		`"payload":{"channelName":"demo","uid":4321,"platform":1,"clientSeq":1625051030746,"ts":%d}}`, at.UnixMilli(), at.Unix())
	post := func(body, sig string) (*http.Response, map[string]any) {
		t.Helper()
		return f.do(t, "POST", "/v1/agora/events", "", body, "Content-Type", "application/json", "Agora-Signature-V2", sig)
	}
	for i, want := range []string{"kept", "duplicate"} {
		if resp, m := post(join, agoratest.SignV2(secret, []byte(join))); resp.StatusCode != 200 || m["result"] != want {
			t.Fatalf("notification #%d: %d %v, want %s", i+1, resp.StatusCode, m, want)
		}
	}
	events, err := store.Events(t.Context(), "default", "demo", at.Add(-time.Minute), at.Add(time.Minute), 0)
	if err != nil || len(events) != 1 || events[0].UID != 4321 || !events[0].At.Equal(at) || events[0].Explained == nil || *events[0].Explained {
		t.Fatalf("kept events: %+v, %v; want 4321's join, which no grant explains", events, err)
	}
	// alice's join with the token the broker granted her is explained.
	uid := f.uid(t, "alice")
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("alice's token: %d", resp.StatusCode)
	}
	aliceJoin := fmt.Sprintf(`{"noticeId":"alice-1","productId":1,"eventType":103,"notifyMs":1,"payload":{"channelName":"demo","uid":%s,"platform":1,"clientSeq":2,"ts":%d}}`,
		uid, time.Now().Unix())
	if resp, m := post(aliceJoin, agoratest.SignV2(secret, []byte(aliceJoin))); resp.StatusCode != 200 || m["result"] != "kept" {
		t.Fatalf("alice's join: %d %v", resp.StatusCode, m)
	}
	resp, m := f.do(t, "GET", "/v1/audit/unexplained", "root;admins", "")
	joins, _ := m["joins"].([]any)
	if resp.StatusCode != 200 || len(joins) != 1 || joins[0].(map[string]any)["uid"].(float64) != 4321 {
		t.Fatalf("unexplained joins: %d %v; want 4321's only", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "GET", "/v1/audit/unexplained", "alice", ""); resp.StatusCode != 403 {
		t.Errorf("unexplained joins without the auditor's right: %d", resp.StatusCode)
	}
	for name, tc := range map[string]struct {
		body, sig string
		status    int
	}{
		"forged":     {join, agoratest.SignV2([]byte("another secret"), []byte(join)), 401},
		"unsigned":   {join, "", 401},
		"oversized":  {join + strings.Repeat(" ", 64<<10), agoratest.SignV2(secret, []byte(join+strings.Repeat(" ", 64<<10))), 413},
		"not JSON":   {"{nope", agoratest.SignV2(secret, []byte("{nope")), 400},
		"other kind": {`{"noticeId":"x-1","productId":3,"eventType":40,"notifyMs":1,"payload":{}}`, "", 200},
	} {
		if tc.status == 200 {
			tc.sig = agoratest.SignV2(secret, []byte(tc.body))
		}
		if resp, m := post(tc.body, tc.sig); resp.StatusCode != tc.status {
			t.Errorf("%s: %d %v, want %d", name, resp.StatusCode, m, tc.status)
		}
	}
}
