package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// vector is one entry of testdata/vectors.json: official tokens from Agora's
// builders in several languages, with the inputs that produced them.
type vector struct {
	ID             string          `json:"id"`
	Version        string          `json:"version"`
	AppID          string          `json:"app_id"`
	AppCertificate *string         `json:"app_certificate"`
	IssueTS        uint32          `json:"issue_ts"`
	Salt           uint32          `json:"salt"`
	Expire         uint32          `json:"expire"`
	Services       []vectorService `json:"services"`
	ExpectedToken  string          `json:"expected_token"`
	ZlibImpl       string          `json:"zlib_impl"`
	// 006 only.
	ChannelName string            `json:"channel_name"`
	UID         string            `json:"uid"`
	TS          uint32            `json:"ts"`
	Privileges  map[string]uint32 `json:"privileges"`
}

type vectorService struct {
	Type        uint16                         `json:"type"`
	ChannelName string                         `json:"channel_name"`
	UID         string                         `json:"uid"`
	Account     string                         `json:"account"`
	UserID      string                         `json:"user_id"`
	RoomUUID    string                         `json:"room_uuid"`
	UserUUID    string                         `json:"user_uuid"`
	Role        int16                          `json:"role"`
	Privileges  map[string]uint32              `json:"privileges"`
	Permissions map[string]map[string][]string `json:"permissions"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatalf("decode vectors: %v", err)
	}
	if len(vs) != 41 {
		t.Fatalf("got %d vectors, want 41", len(vs))
	}
	return vs
}

// The reference encoder below is written straight from SPEC.md, separately
// from the package's encoder, so the vectors check both against the spec.

type refWriter struct{ bytes.Buffer }

func (w *refWriter) u16(v uint16) { binary.Write(w, binary.LittleEndian, v) }
func (w *refWriter) u32(v uint32) { binary.Write(w, binary.LittleEndian, v) }
func (w *refWriter) str(s string) { w.u16(uint16(len(s))); w.WriteString(s) }

// sortedKeys returns a JSON object's decimal keys in ascending numeric order.
func sortedKeys[V any](t testing.TB, m map[string]V) []uint16 {
	t.Helper()
	keys := make([]uint16, 0, len(m))
	for k := range m {
		n, err := strconv.ParseUint(k, 10, 16)
		if err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
		keys = append(keys, uint16(n))
	}
	slices.Sort(keys)
	return keys
}

func (w *refWriter) privileges(t testing.TB, m map[string]uint32) {
	keys := sortedKeys(t, m)
	w.u16(uint16(len(keys)))
	for _, k := range keys {
		w.u16(k)
		w.u32(m[strconv.Itoa(int(k))])
	}
}

// refSigningInfo encodes a 007 vector's signing_info from its inputs.
func refSigningInfo(t testing.TB, v vector) []byte {
	t.Helper()
	var w refWriter
	w.str(v.AppID)
	w.u32(v.IssueTS)
	w.u32(v.Expire)
	w.u32(v.Salt)
	services := slices.Clone(v.Services)
	slices.SortStableFunc(services, func(a, b vectorService) int { return int(a.Type) - int(b.Type) })
	w.u16(uint16(len(services)))
	for _, s := range services {
		w.u16(s.Type)
		w.privileges(t, s.Privileges)
		switch ServiceType(s.Type) {
		case ServiceRTC:
			w.str(s.ChannelName)
			w.str(s.UID)
		case ServiceStreaming, ServiceFCDN:
			w.str(s.ChannelName)
			w.str(s.Account)
		case ServiceRTM, ServiceChat:
			w.str(s.UserID)
		case ServiceFPA:
		case ServiceAPaaS:
			w.str(s.RoomUUID)
			w.str(s.UserUUID)
			w.u16(uint16(s.Role))
		case ServiceRTM2:
			w.str(s.UserID)
			resources := sortedKeys(t, s.Permissions)
			w.u16(uint16(len(resources)))
			for _, r := range resources {
				perms := s.Permissions[strconv.Itoa(int(r))]
				w.u16(r)
				kinds := sortedKeys(t, perms)
				w.u16(uint16(len(kinds)))
				for _, k := range kinds {
					names := perms[strconv.Itoa(int(k))]
					w.u16(k)
					w.u16(uint16(len(names)))
					for _, n := range names {
						w.str(n)
					}
				}
			}
		default:
			t.Fatalf("vector %s: service type %d not in the spec", v.ID, s.Type)
		}
	}
	return w.Bytes()
}

// refContent is string(signature) || signing_info, signed with crypto/hmac.
func refContent(t testing.TB, v vector) []byte {
	info := refSigningInfo(t, v)
	mac := func(key, msg []byte) []byte {
		h := hmac.New(sha256.New, key)
		h.Write(msg)
		return h.Sum(nil)
	}
	k1 := mac(binary.LittleEndian.AppendUint32(nil, v.IssueTS), []byte(*v.AppCertificate))
	k2 := mac(binary.LittleEndian.AppendUint32(nil, v.Salt), k1)
	var w refWriter
	w.WriteString(string(binary.LittleEndian.AppendUint16(nil, sha256.Size)))
	w.Write(mac(k2, info))
	w.Write(info)
	return w.Bytes()
}

// TestVectors007_ContentAndSignature checks each official token's decompressed
// content, signature included, against the spec. It no longer compares token
// strings: the builder stores its content instead of compressing it like
// Agora's Go builder, so only the content and signature are identical.
func TestVectors007_ContentAndSignature(t *testing.T) {
	for _, v := range loadVectors(t) {
		if v.Version != Version007 {
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			content, err := inflate(v.ExpectedToken)
			if err != nil {
				t.Fatalf("inflate: %v", err)
			}
			if got, want := content[2+sha256.Size:], refSigningInfo(t, v); !bytes.Equal(got, want) {
				t.Fatalf("signing_info differs from the inputs\n got %x\nwant %x", got, want)
			}
			if v.AppCertificate == nil {
				return // minted by a server for an unknown certificate: decode only
			}
			if want := refContent(t, v); !bytes.Equal(content, want) {
				t.Fatalf("content differs\n got %x\nwant %x", content, want)
			}
			if got, err := inflate(encode007(content)); err != nil || !bytes.Equal(got, content) {
				t.Errorf("our encoding of the content does not decode to it (err %v)", err)
			}
		})
	}
}

// TestVectors007_IncludeStoredDeflate pins the evidence that Agora accepts the
// builder's stream format: an official token whose deflate data is a stored
// block (BTYPE 00), which TestVectors007_ParseAndVerify verifies like the rest.
func TestVectors007_IncludeStoredDeflate(t *testing.T) {
	for _, v := range loadVectors(t) {
		if v.Version != Version007 || !strings.Contains(v.ZlibImpl, "stored") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v.ExpectedToken, Version007))
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) < 3 || raw[2]&0b110 != 0 {
			t.Fatalf("vector %s (%s): first block is not stored", v.ID, v.ZlibImpl)
		}
		return
	}
	t.Fatal("no official vector with a stored deflate block")
}

func TestVectors007_ParseAndVerify(t *testing.T) {
	for _, v := range loadVectors(t) {
		if v.Version != Version007 {
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			tok, err := Parse(v.ExpectedToken)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tok.AppID != v.AppID || tok.IssuedAt != v.IssueTS || tok.Expire != v.Expire || tok.Salt != v.Salt {
				t.Errorf("header = %s/%d/%d/%d, want %s/%d/%d/%d",
					tok.AppID, tok.IssuedAt, tok.Expire, tok.Salt, v.AppID, v.IssueTS, v.Expire, v.Salt)
			}
			want := slices.Clone(v.Services)
			slices.SortStableFunc(want, func(a, b vectorService) int { return int(a.Type) - int(b.Type) })
			if len(tok.Services) != len(want) {
				t.Fatalf("got %d services, want %d", len(tok.Services), len(want))
			}
			for i, w := range want {
				checkService(t, i, tok.Services[i], w)
			}
			if v.AppCertificate == nil {
				return
			}
			if !tok.Verify(*v.AppCertificate) {
				t.Error("Verify(official certificate) = false")
			}
			if tok.Verify("5CFd2fd1755d40ecb72977518be15d3c") {
				t.Error("Verify(another certificate) = true")
			}
		})
	}
}

func checkService(t *testing.T, i int, got Service, want vectorService) {
	t.Helper()
	if uint16(got.Type) != want.Type {
		t.Errorf("service %d: type %d, want %d", i, got.Type, want.Type)
		return
	}
	keys := sortedKeys(t, want.Privileges)
	wantPrivs := make([]Privilege, len(keys))
	for j, k := range keys {
		wantPrivs[j] = Privilege{ID: k, Expire: want.Privileges[strconv.Itoa(int(k))]}
	}
	if !slices.Equal(got.Privileges, wantPrivs) {
		t.Errorf("service %d: privileges %v, want %v", i, got.Privileges, wantPrivs)
	}
	fields := Service{Type: got.Type, Privileges: got.Privileges, Permissions: got.Permissions}
	switch got.Type {
	case ServiceRTC:
		fields.Channel, fields.UID = want.ChannelName, want.UID
	case ServiceStreaming, ServiceFCDN:
		fields.Channel, fields.UID = want.ChannelName, want.Account
	case ServiceRTM, ServiceChat, ServiceRTM2:
		fields.User = want.UserID
	case ServiceAPaaS:
		fields.Room, fields.User, fields.Role = want.RoomUUID, want.UserUUID, want.Role
	}
	if got.Channel != fields.Channel || got.UID != fields.UID || got.User != fields.User || got.Room != fields.Room || got.Role != fields.Role {
		t.Errorf("service %d: got %+v, want %+v", i, got, fields)
	}
	if got.Type == ServiceRTM2 {
		var wantPerms []RTMPermission
		for _, r := range sortedKeys(t, want.Permissions) {
			perms := want.Permissions[strconv.Itoa(int(r))]
			for _, k := range sortedKeys(t, perms) {
				wantPerms = append(wantPerms, RTMPermission{ResourceType: r, PermissionType: k, Resources: perms[strconv.Itoa(int(k))]})
			}
		}
		if !slices.EqualFunc(got.Permissions, wantPerms, func(a, b RTMPermission) bool {
			return a.ResourceType == b.ResourceType && a.PermissionType == b.PermissionType && slices.Equal(a.Resources, b.Resources)
		}) {
			t.Errorf("service %d: permissions %+v, want %+v", i, got.Permissions, wantPerms)
		}
	}
}

func TestVectors006_ParseAndVerify(t *testing.T) {
	n := 0
	for _, v := range loadVectors(t) {
		if v.Version != Version006 {
			continue
		}
		n++
		t.Run(v.ID, func(t *testing.T) {
			tok, err := Parse006(v.ExpectedToken)
			if err != nil {
				t.Fatalf("Parse006: %v", err)
			}
			keys := sortedKeys(t, v.Privileges)
			want := make([]Privilege, len(keys))
			for j, k := range keys {
				want[j] = Privilege{ID: k, Expire: v.Privileges[strconv.Itoa(int(k))]}
			}
			if tok.AppID != v.AppID || tok.Salt != v.Salt || tok.Expire != v.TS || !slices.Equal(tok.Privileges, want) {
				t.Errorf("got %s salt %d ts %d %v, want %s salt %d ts %d %v",
					tok.AppID, tok.Salt, tok.Expire, tok.Privileges, v.AppID, v.Salt, v.TS, want)
			}
			cert := *v.AppCertificate
			if !tok.Verify(cert, v.ChannelName, v.UID) {
				t.Error("Verify(official certificate, channel, uid) = false")
			}
			for name, args := range map[string][3]string{
				"another certificate": {"5CFd2fd1755d40ecb72977518be15d3c", v.ChannelName, v.UID},
				"another channel":     {cert, v.ChannelName + "x", v.UID},
				"another uid":         {cert, v.ChannelName, v.UID + "1"},
			} {
				if tok.Verify(args[0], args[1], args[2]) {
					t.Errorf("Verify with %s = true", name)
				}
			}
		})
	}
	if n != 5 {
		t.Errorf("checked %d 006 vectors, want 5", n)
	}
}

// TestBuilder_ReproducesOfficialTokens builds the vectors the broker's own
// requests can express and compares the decompressed content, signature
// included, with the official token's. The token strings differ: the builder
// stores the content in its zlib stream where Agora's builders compress it.
func TestBuilder_ReproducesOfficialTokens(t *testing.T) {
	vectors := map[string]vector{}
	for _, v := range loadVectors(t) {
		vectors[v.ID] = v
	}
	const channel = "7d72365eb983485397e3e3f9d460bdda"
	rtc := func(r RTCRequest) func(*Builder) (string, error) {
		r.Channel, r.Expire, r.IssuedAt, r.Salt = channel, 600, 1111111, 1
		return func(b *Builder) (string, error) { return b.RTC(r) }
	}
	tests := map[string]func(*Builder) (string, error){
		"go_rtc_uid":           rtc(RTCRequest{UID: 2882341273, Role: RoleSubscriber}),
		"go_rtc_uid0":          rtc(RTCRequest{UID: 0, Role: RoleSubscriber}),
		"py_rtc_account":       rtc(RTCRequest{Account: "2882341273", Role: RoleSubscriber}),
		"py_rtc_rtm_publisher": rtc(RTCRequest{UID: 2882341273, Role: RolePublisher, RTMUser: "test_user"}),
		"go_rtm": func(b *Builder) (string, error) {
			return b.RTM("test_user", 600, 1111111, 1)
		},
		"go_chat_user": func(b *Builder) (string, error) {
			return b.ChatUser("2882341273", 600, 1111111, 1)
		},
		"go_chat_app": func(b *Builder) (string, error) {
			return b.ChatApp(600, 1111111, 1)
		},
	}
	for id, build := range tests {
		t.Run(id, func(t *testing.T) {
			v := vectors[id]
			b, err := NewBuilder(v.AppID, *v.AppCertificate)
			if err != nil {
				t.Fatal(err)
			}
			got, err := build(b)
			if err != nil {
				t.Fatal(err)
			}
			gotContent, err := inflate(got)
			if err != nil {
				t.Fatal(err)
			}
			wantContent, err := inflate(v.ExpectedToken)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotContent, wantContent) {
				t.Errorf("content differs\n got %x\nwant %x", gotContent, wantContent)
			}
		})
	}
}
