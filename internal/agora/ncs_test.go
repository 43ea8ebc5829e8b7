package agora_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/apperr"
)

// ncsSecret is a made-up NCS secret; joinBody is a broadcaster join shaped
// like Agora's documented example, with made-up values; joinSig is its
// Agora-Signature-V2 under ncsSecret, computed outside Go with
// `openssl dgst -sha256 -hmac`.
const (
	ncsSecret = "ncs-secret-for-tests-only"
	joinBody  = `{"noticeId":"7d1a0c52-3b4e-4f1f-9a53-1c2f6b0e9d41","productId":1,"eventType":103,"notifyMs":1717171717171,"sid":"A1B2C3D4E5F60718293A4B5C6D7E8F90","payload":{"clientSeq":1717171717000,"uid":123456,"channelName":"lobby-7","platform":1,"ts":1717171717}}`
	joinSig   = "5b48449645438a99cffea88aa8794d79d9407f1003ebd966d8b99d64462275d2"
)

func TestVerifySignatureV2(t *testing.T) {
	t.Parallel()
	secret, body := []byte(ncsSecret), []byte(joinBody)
	sha1Mac := hmac.New(sha1.New, secret)
	sha1Mac.Write(body)
	other := []byte(strings.Replace(joinBody, `"uid":123456`, `"uid":123457`, 1))
	for _, tc := range []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   bool
	}{
		{"Agora's signature", secret, body, joinSig, true},
		{"the test server's signature", secret, body, agoratest.SignV2(secret, body), true},
		{"upper-case hex", secret, body, strings.ToUpper(joinSig), true},
		{"forged", secret, body, strings.Repeat("ab", 32), false},
		{"one digit changed", secret, body, joinSig[:63] + "3", false},
		{"signature of another body", secret, other, joinSig, false},
		{"body re-encoded", secret, []byte(strings.ReplaceAll(joinBody, ",", ", ")), joinSig, false},
		{"another secret", []byte(ncsSecret + "x"), body, joinSig, false},
		{"empty secret", nil, body, agoratest.SignV2(nil, body), false},
		{"the SHA-1 signature", secret, body, hex.EncodeToString(sha1Mac.Sum(nil)), false},
		{"short", secret, body, joinSig[:62], false},
		{"long", secret, body, joinSig + "00", false},
		{"not hex", secret, body, "zz" + joinSig[2:], false},
		{"padded", secret, body, " " + joinSig[1:], false},
		{"empty", secret, body, "", false},
	} {
		if got := agora.VerifySignatureV2(tc.secret, tc.body, tc.header); got != tc.want {
			t.Errorf("%s: VerifySignatureV2 = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// event returns a notification body of Agora's shape.
func event(eventType int, payload string) []byte {
	return fmt.Appendf(nil, `{"noticeId":"n-%d","productId":1,"eventType":%d,"notifyMs":1717171717171,"sid":"S1","payload":%s}`,
		eventType, eventType, payload)
}

func TestParseEvent_ChannelEvents(t *testing.T) {
	t.Parallel()
	at := time.Unix(1717171717, 0).UTC()
	user := `{"channelName":"lobby-7","uid":4294967295,"platform":6,"clientSeq":1717171717001,"ts":1717171717}`
	left := `{"channelName":"lobby-7","uid":4294967295,"platform":6,"clientSeq":1717171717002,"ts":1717171717,"reason":1,"duration":42,"account":"ada"}`
	channel := `{"channelName":"lobby-7","ts":1717171717}`
	for _, tc := range []struct {
		eventType int
		payload   string
		kind      agora.EventKind
		role      agora.Role
	}{
		{101, channel, agora.ChannelCreated, ""},
		{102, channel, agora.ChannelDestroyed, ""},
		{103, user, agora.Joined, agora.Broadcaster},
		{104, left, agora.Left, agora.Broadcaster},
		{105, user, agora.Joined, agora.Audience},
		{106, left, agora.Left, agora.Audience},
		{107, user, agora.Joined, agora.Communication},
		{108, left, agora.Left, agora.Communication},
		{111, user, agora.RoleChanged, agora.Broadcaster},
		{112, user, agora.RoleChanged, agora.Audience},
	} {
		e, err := agora.ParseEvent(event(tc.eventType, tc.payload))
		if err != nil {
			t.Errorf("%d: %v", tc.eventType, err)
			continue
		}
		want := agora.Event{
			NoticeID: fmt.Sprint("n-", tc.eventType), ProductID: 1, EventType: tc.eventType,
			NotifyAt: time.UnixMilli(1717171717171).UTC(), Kind: tc.kind, Role: tc.role,
			Channel: "lobby-7", At: at,
		}
		switch tc.payload {
		case user:
			want.UID, want.Platform, want.ClientSeq = 4294967295, 6, 1717171717001
		case left:
			want.UID, want.Platform, want.ClientSeq = 4294967295, 6, 1717171717002
			want.Reason, want.Duration, want.Account = 1, 42*time.Second, "ada"
		}
		if e != want {
			t.Errorf("%d: ParseEvent =\n\t%+v\nwant\n\t%+v", tc.eventType, e, want)
		}
	}
}

func TestParseEvent_OtherEventsKeepTheirType(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"unknown RTC event":           `{"noticeId":"n1","productId":1,"eventType":110,"notifyMs":1,"payload":{"whatever":[1,2]}}`,
		"cloud recording event":       `{"noticeId":"n2","productId":3,"eventType":103,"notifyMs":1,"payload":{"cname":"x"}}`,
		"Agora's signature example":   `{"eventMs":1,"eventType":10,"noticeId":"n3","notifyMs":1,"payload":{"a":"1","b":2},"productId":1}`,
		"event without payload field": `{"noticeId":"n4","productId":1,"eventType":999}`,
	} {
		e, err := agora.ParseEvent([]byte(body))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if e.Kind != agora.Other || e.EventType == 0 || e.NoticeID == "" || e.Channel != "" {
			t.Errorf("%s: ParseEvent = %+v, want kind other with its type and notice id", name, e)
		}
	}
}

func TestParseEvent_RefusesMalformed(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not JSON":             `noticeId=1`,
		"two objects":          string(event(101, `{"channelName":"a"}`)) + `{}`,
		"no noticeId":          `{"productId":1,"eventType":101,"payload":{"channelName":"a"}}`,
		"no eventType":         `{"noticeId":"n","productId":1,"payload":{"channelName":"a"}}`,
		"eventType a string":   `{"noticeId":"n","productId":1,"eventType":"101","payload":{"channelName":"a"}}`,
		"no channelName":       string(event(103, `{"uid":1}`)),
		"no uid on a join":     string(event(103, `{"channelName":"a"}`)),
		"uid over 32 bits":     string(event(103, `{"channelName":"a","uid":4294967296}`)),
		"negative uid":         string(event(103, `{"channelName":"a","uid":-1}`)),
		"uid a string":         string(event(103, `{"channelName":"a","uid":"1"}`)),
		"payload not a object": string(event(101, `[1]`)),
		"null payload":         string(event(101, `null`)),
	} {
		if _, err := agora.ParseEvent([]byte(body)); apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("%s: %v, want an Invalid error", name, err)
		}
	}
}

func TestParseEvent_BoundsTheBody(t *testing.T) {
	t.Parallel()
	body := event(101, `{"channelName":"lobby-7","ts":1717171717}`)
	atLimit := append(body, bytes.Repeat([]byte(" "), agora.MaxEventBytes-len(body))...)
	if _, err := agora.ParseEvent(atLimit); err != nil {
		t.Errorf("a body of exactly MaxEventBytes: %v", err)
	}
	over := append(body, bytes.Repeat([]byte(" "), 65<<10-len(body))...)
	if _, err := agora.ParseEvent(over); apperr.KindOf(err) != apperr.TooLarge {
		t.Errorf("a 65 KiB body: %v, want a TooLarge error", err)
	}
}
