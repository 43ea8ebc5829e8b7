package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"time"
)

// Version007 is the prefix of every AccessToken2 string.
const Version007 = "007"

// maxSalt bounds generated salts to Agora's range [1, 99999999).
const maxSalt = 99999999

// Builder mints AccessToken2 tokens for one Agora app. Create it with
// NewBuilder; it is safe for concurrent use.
type Builder struct {
	appID string
	cert  []byte
	// header is the fixed start of every signing_info: the app id as a
	// length-prefixed string.
	header []byte
}

// NewBuilder checks the app id and certificate (32 hex characters each, case
// kept as given) and returns a Builder for that app. An error is an
// *InputError naming "app_id" or "app_certificate".
func NewBuilder(appID, appCert string) (*Builder, error) {
	if err := validateHex32("app_id", appID); err != nil {
		return nil, err
	}
	if err := validateHex32("app_certificate", appCert); err != nil {
		return nil, err
	}
	header := binary.LittleEndian.AppendUint16(nil, uint16(len(appID)))
	return &Builder{appID: appID, cert: []byte(appCert), header: append(header, appID...)}, nil
}

// AppID is the App ID the builder signs for ("" for a Builder NewBuilder did
// not make).
func (b *Builder) AppID() string { return b.appID }

// errNoApp is returned by a Builder that NewBuilder did not make: it has no
// certificate to sign with, and must not sign with an empty key.
var errNoApp = errors.New("token: Builder has no app: create it with NewBuilder")

func (b *Builder) ready() error {
	if b == nil || len(b.cert) == 0 {
		return errNoApp
	}
	return nil
}

// RTCRequest describes an RTC token, optionally with an RTM login in the same
// token.
type RTCRequest struct {
	// Channel is the channel name; with AllowWildcard it may contain '*'.
	Channel       string
	AllowWildcard bool
	// Account, when not empty, is the user account the token is bound to;
	// otherwise UID is, packed as its decimal string (0 packs as "", which
	// Agora reads as "any uid").
	Account string
	UID     uint32
	Role    Role
	// Expire is the lifetime in seconds (1…86400), used for the token and
	// every privilege.
	Expire uint32
	// RTMUser, when not empty, adds an RTM login service for that user with
	// login expiring with the token, as Agora's BuildTokenWithRtm does.
	RTMUser string
	// IssuedAt (Unix seconds) and Salt make a token reproducible; zero means
	// now and a random salt in [1, 99999999).
	IssuedAt uint32
	Salt     uint32
}

// RTC mints an RTC token (service type 1, plus RTM when req.RTMUser is set).
// Invalid input gives an *InputError naming the field.
func (b *Builder) RTC(req RTCRequest) (string, error) {
	if err := b.ready(); err != nil {
		return "", err
	}
	if err := ValidateChannel(req.Channel, req.AllowWildcard); err != nil {
		return "", err
	}
	if req.Account != "" {
		if err := ValidateAccount(req.Account); err != nil {
			return "", err
		}
	}
	if err := validateRole(req.Role); err != nil {
		return "", err
	}
	if err := validateExpire(req.Expire); err != nil {
		return "", err
	}
	services := uint16(1)
	if req.RTMUser != "" {
		if err := validateRTMUser(req.RTMUser); err != nil {
			return "", err
		}
		services++
	}

	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	issuedAt, salt := e.stamp(req.IssuedAt, req.Salt)
	e.begin(b.header, issuedAt, req.Expire, salt, services)

	e.u16(uint16(ServiceRTC))
	if req.Role == RolePublisher {
		e.privileges(req.Expire, PrivilegeJoinChannel, PrivilegePublishAudio, PrivilegePublishVideo, PrivilegePublishData)
	} else {
		e.privileges(req.Expire, PrivilegeJoinChannel)
	}
	e.str(req.Channel)
	if req.Account != "" {
		e.str(req.Account)
	} else {
		e.uid(req.UID)
	}
	if req.RTMUser != "" {
		e.rtm(req.RTMUser, req.Expire)
	}
	return e.seal(b.cert, issuedAt, salt), nil
}

// RTM mints an RTM login token for user (service type 2) that lives expire
// seconds (1…86400). issuedAt and salt work as in RTCRequest: zero means now
// and random. Invalid input gives an *InputError naming the field.
func (b *Builder) RTM(user string, expire uint32, issuedAt, salt uint32) (string, error) {
	if err := b.ready(); err != nil {
		return "", err
	}
	if err := validateRTMUser(user); err != nil {
		return "", err
	}
	if err := validateExpire(expire); err != nil {
		return "", err
	}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	issuedAt, salt = e.stamp(issuedAt, salt)
	e.begin(b.header, issuedAt, expire, salt, 1)
	e.rtm(user, expire)
	return e.seal(b.cert, issuedAt, salt), nil
}

// ChatUser mints a Chat user token for user (service type 5, privilege
// "user") that lives expire seconds (1…86400); issuedAt and salt work as in
// RTCRequest. The user id follows the RTM user id's rules.
func (b *Builder) ChatUser(user string, expire uint32, issuedAt, salt uint32) (string, error) {
	if err := validateRTMUser(user); err != nil {
		return "", &InputError{Field: "chat_user", Reason: err.(*InputError).Reason}
	}
	return b.chat(user, PrivilegeChatUser, expire, issuedAt, salt)
}

// ChatApp mints a Chat app token (service type 5, privilege "app", no user):
// a credential for Agora's Chat REST API, so only administrators get one.
func (b *Builder) ChatApp(expire uint32, issuedAt, salt uint32) (string, error) {
	return b.chat("", PrivilegeChatApp, expire, issuedAt, salt)
}

func (b *Builder) chat(user string, privilege uint16, expire, issuedAt, salt uint32) (string, error) {
	if err := b.ready(); err != nil {
		return "", err
	}
	if err := validateExpire(expire); err != nil {
		return "", err
	}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	issuedAt, salt = e.stamp(issuedAt, salt)
	e.begin(b.header, issuedAt, expire, salt, 1)
	e.u16(uint16(ServiceChat))
	e.privileges(expire, privilege)
	e.str(user)
	return e.seal(b.cert, issuedAt, salt), nil
}

// encoders holds per-token scratch space, so that minting allocates only the
// returned string.
var encoders = sync.Pool{New: func() any { return newEncoder() }}

type encoder struct {
	content []byte // string(signature) || signing_info
	z       []byte // content as a zlib stream
	out     []byte // "007" + base64(z)
	sig     [sha256.Size]byte
	rnd     [4]byte
	signer  *signer
}

func newEncoder() *encoder {
	return &encoder{
		content: make([]byte, 0, 512),
		z:       make([]byte, 0, 512),
		out:     make([]byte, 0, 1024),
		signer:  newSigner(),
	}
}

// stamp fills in the issue time and salt when the caller left them zero.
func (e *encoder) stamp(issuedAt, salt uint32) (uint32, uint32) {
	if issuedAt == 0 {
		issuedAt = uint32(time.Now().Unix())
	}
	if salt == 0 {
		rand.Read(e.rnd[:]) // never fails (crypto/rand crashes the program instead)
		salt = 1 + binary.LittleEndian.Uint32(e.rnd[:])%(maxSalt-1)
	}
	return issuedAt, salt
}

// begin starts the content with room for the signature, then the signing_info
// header up to the service count.
func (e *encoder) begin(appHeader []byte, issuedAt, expire, salt uint32, services uint16) {
	e.content = append(e.content[:0], sha256.Size, 0)
	e.content = append(e.content, make([]byte, sha256.Size)...)
	e.content = append(e.content, appHeader...)
	e.u32(issuedAt)
	e.u32(expire)
	e.u32(salt)
	e.u16(services)
}

func (e *encoder) u16(v uint16) { e.content = binary.LittleEndian.AppendUint16(e.content, v) }
func (e *encoder) u32(v uint32) { e.content = binary.LittleEndian.AppendUint32(e.content, v) }

// str writes a length-prefixed string. Validation keeps every string far below
// the format's 65535-byte limit.
func (e *encoder) str(s string) {
	e.u16(uint16(len(s)))
	e.content = append(e.content, s...)
}

// uid writes a numeric uid as its decimal string, 0 as "".
func (e *encoder) uid(uid uint32) {
	at := len(e.content)
	e.u16(0)
	if uid != 0 {
		e.content = strconv.AppendUint(e.content, uint64(uid), 10)
	}
	binary.LittleEndian.PutUint16(e.content[at:], uint16(len(e.content)-at-2))
}

// privileges writes a privilege map; ids must be in ascending order.
func (e *encoder) privileges(expire uint32, ids ...uint16) {
	e.u16(uint16(len(ids)))
	for _, id := range ids {
		e.u16(id)
		e.u32(expire)
	}
}

func (e *encoder) rtm(user string, expire uint32) {
	e.u16(uint16(ServiceRTM))
	e.privileges(expire, PrivilegeLogin)
	e.str(user)
}

// seal signs the content, then wraps and encodes it.
func (e *encoder) seal(cert []byte, issuedAt, salt uint32) string {
	e.signer.sign007(&e.sig, cert, issuedAt, salt, e.content[2+sha256.Size:])
	copy(e.content[2:], e.sig[:])
	return e.finish()
}

// finish wraps the signed content in a zlib stream of stored blocks (see
// appendZlib) and encodes it as a 007 token string.
func (e *encoder) finish() string {
	e.z = appendZlib(e.z[:0], e.content)
	e.out = append(e.out[:0], Version007...)
	e.out = base64.StdEncoding.AppendEncode(e.out, e.z)
	return string(e.out)
}
