package token

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Bounds on the work a hostile token can cause.
const (
	// MaxTokenLen is the longest token string Parse and Parse006 read.
	MaxTokenLen = 128 << 10
	// MaxContentLen caps a 007 token's decompressed content.
	MaxContentLen = 64 << 10
)

// ParseError reports why a token could not be decoded. Field names the part at
// fault ("token", "version", "base64", "zlib", "signature", "app_id",
// "service[1].channel", …); Err is the underlying decoder error, if any.
type ParseError struct {
	Version string
	Field   string
	Reason  string
	Err     error
}

func (e *ParseError) Error() string {
	msg := "token: cannot parse " + e.Version + " token: " + e.Field + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// UnknownServiceError reports a service type Parse does not know. The body of
// such a service has no known length, so decoding stops there; services before
// it are decoded and the signature can still be verified.
type UnknownServiceError struct {
	Index int    // position of the service in the token
	Type  uint16 // its type
}

func (e *UnknownServiceError) Error() string {
	return fmt.Sprintf("token: service %d has unknown type %d; it and any later services were not decoded", e.Index, e.Type)
}

// Parse decodes an AccessToken2 ("007") string. It accepts any valid zlib
// stream and any salt, and checks nothing about validity: call Verify for the
// signature, and check the app id, expiry and services yourself.
//
// An error is a *ParseError, except for a service of unknown type: then Parse
// returns the token decoded so far (its Verify still works, because the signed
// bytes are kept) together with an *UnknownServiceError.
func Parse(s string) (*AccessToken, error) {
	content, err := inflate(s)
	if err != nil {
		return nil, err
	}
	return parseContent(content)
}

// parseContent decodes decompressed 007 content: string(signature) ||
// signing_info.
func parseContent(content []byte) (*AccessToken, error) {
	d := &decoder{b: content, version: Version007, svc: -1}
	sig := d.bytes("signature")
	if d.err == nil && len(sig) != sha256.Size {
		d.fail("signature", fmt.Sprintf("is %d bytes, want %d", len(sig), sha256.Size))
	}
	t := &AccessToken{Signature: sig, signingInfo: content[d.off:]}
	t.AppID = d.str("app_id")
	t.IssuedAt = d.u32("issue_ts")
	t.Expire = d.u32("expire")
	t.Salt = d.u32("salt")
	n := d.count("service_count", 2)
	if d.err != nil {
		return nil, d.err
	}
	// Every known service takes at least 4 bytes; an unknown one may take 2.
	t.Services = make([]Service, 0, min(n, d.left()/4))
	for i := range n {
		d.svc = i
		typ := ServiceType(d.u16("type"))
		if d.err != nil {
			return nil, d.err
		}
		if typ == 0 || int(typ) >= len(serviceNames) {
			return t, &UnknownServiceError{Index: i, Type: uint16(typ)}
		}
		t.Services = append(t.Services, d.service(typ))
	}
	d.svc = -1
	if d.err == nil && d.left() > 0 {
		d.fail("end", fmt.Sprintf("%d bytes after the last service", d.left()))
	}
	if d.err != nil {
		return nil, d.err
	}
	return t, nil
}

// Verify reports whether the token was signed with appCert, comparing in
// constant time. It recomputes the signature over the bytes as received.
func (t *AccessToken) Verify(appCert string) bool {
	if validateHex32("app_certificate", appCert) != nil || len(t.Signature) != sha256.Size {
		return false
	}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.signer.sign007(&e.sig, []byte(appCert), t.IssuedAt, t.Salt, t.signingInfo)
	ok := hmac.Equal(e.sig[:], t.Signature)
	e.sig = [sha256.Size]byte{}
	return ok
}

// inflate checks the version prefix, then base64- and zlib-decodes a 007
// token, refusing more than MaxContentLen bytes of output.
func inflate(s string) ([]byte, error) {
	perr := func(field, reason string, err error) error {
		return &ParseError{Version: Version007, Field: field, Reason: reason, Err: err}
	}
	if len(s) > MaxTokenLen {
		return nil, perr("token", fmt.Sprintf("is %d bytes, at most %d allowed", len(s), MaxTokenLen), nil)
	}
	if !strings.HasPrefix(s, Version007) {
		return nil, perr("version", "does not start with \"007\"", nil)
	}
	raw, err := base64.StdEncoding.DecodeString(s[len(Version007):])
	if err != nil {
		return nil, perr("base64", "not standard padded base64", err)
	}
	src := bytes.NewReader(raw)
	zr, err := zlib.NewReader(src)
	if err != nil {
		return nil, perr("zlib", "bad stream header", err)
	}
	content, err := io.ReadAll(io.LimitReader(zr, MaxContentLen+1))
	if err != nil {
		return nil, perr("zlib", "bad compressed data", err)
	}
	if len(content) > MaxContentLen {
		return nil, perr("zlib", fmt.Sprintf("decompresses to more than %d bytes", MaxContentLen), nil)
	}
	if src.Len() > 0 {
		return nil, perr("zlib", fmt.Sprintf("%d bytes after the end of the stream", src.Len()), nil)
	}
	return content, nil
}

// decoder reads the little-endian wire primitives. The first failure sticks:
// later reads return zero values, and err says where decoding stopped.
type decoder struct {
	b       []byte
	off     int
	version string
	svc     int // index of the service being read; -1 outside services
	err     *ParseError
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) fail(field, reason string) {
	if d.err != nil {
		return
	}
	if d.svc >= 0 {
		field = fmt.Sprintf("service[%d].%s", d.svc, field)
	}
	d.err = &ParseError{Version: d.version, Field: field, Reason: fmt.Sprintf("%s (at byte %d)", reason, d.off)}
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if d.left() < n {
		d.fail(field, fmt.Sprintf("truncated: needs %d bytes, %d left", n, d.left()))
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u16(field string) uint16 {
	if p := d.take(field, 2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if p := d.take(field, 4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) bytes(field string) []byte {
	n := d.u16(field)
	return d.take(field, int(n))
}

func (d *decoder) str(field string) string { return string(d.bytes(field)) }

// count reads a u16 element count and checks that the elements, each at least
// minSize bytes, can fit in what is left, so hostile counts never drive a
// large allocation.
func (d *decoder) count(field string, minSize int) int {
	n := int(d.u16(field))
	if d.err == nil && n*minSize > d.left() {
		d.fail(field, fmt.Sprintf("%d entries cannot fit in the %d bytes left", n, d.left()))
		return 0
	}
	return n
}

func (d *decoder) privileges() []Privilege {
	n := d.count("privileges", 6)
	ps := make([]Privilege, n)
	for i := range ps {
		ps[i] = Privilege{ID: d.u16("privileges"), Expire: d.u32("privileges")}
	}
	return ps
}

// service reads the body of a known service type (SPEC.md §2.4).
func (d *decoder) service(typ ServiceType) Service {
	s := Service{Type: typ, Privileges: d.privileges()}
	switch typ {
	case ServiceRTC:
		s.Channel = d.str("channel")
		s.UID = d.str("uid")
	case ServiceStreaming, ServiceFCDN:
		s.Channel = d.str("channel")
		s.UID = d.str("account")
	case ServiceRTM, ServiceChat:
		s.User = d.str("user")
	case ServiceFPA:
	case ServiceAPaaS:
		s.Room = d.str("room")
		s.User = d.str("user")
		s.Role = int16(d.u16("role"))
	case ServiceRTM2:
		s.User = d.str("user")
		s.Permissions = d.rtmPermissions()
	}
	return s
}

// rtmPermissions reads an RTM2 permission table, flattening it to one entry
// per (resource type, permission type).
func (d *decoder) rtmPermissions() []RTMPermission {
	var perms []RTMPermission
	types := d.count("permissions", 4)
	for range types {
		resource := d.u16("permissions.resource_type")
		n := d.count("permissions.permission_count", 4)
		for range n {
			p := RTMPermission{ResourceType: resource, PermissionType: d.u16("permissions.permission_type")}
			p.Resources = make([]string, d.count("permissions.resources", 2))
			for i := range p.Resources {
				p.Resources[i] = d.str("permissions.resources")
			}
			perms = append(perms, p)
		}
	}
	return perms
}
