// Package token owns Agora's token formats: it builds, parses and verifies
// AccessToken2 ("007") and parses and verifies the legacy AccessToken ("006").
// It must never do I/O, decide who may hold a token, or let an app certificate
// reach an error or any output.
//
// The 007 tokens it builds are not byte-identical to those of Agora's Go
// builder: their zlib stream holds the content in stored (uncompressed)
// deflate blocks instead of compressing it, which makes minting much faster
// and a typical token about a dozen characters longer. The content, and so
// the signature, is identical. Agora accepts any valid zlib stream: the
// official test vectors include a token from Rust's builder with a stored
// deflate block, and tokens from five other zlib implementations.
package token

import "fmt"

// Role is an RTC client role as Agora's builders number it.
type Role int

// The RTC roles. A publisher may join and publish audio, video and data; a
// subscriber may only join.
const (
	RolePublisher  Role = 1
	RoleSubscriber Role = 2
)

// String returns "publisher" or "subscriber".
func (r Role) String() string {
	switch r {
	case RolePublisher:
		return "publisher"
	case RoleSubscriber:
		return "subscriber"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ServiceType identifies a service record inside an AccessToken2.
type ServiceType uint16

// The service types Agora defines. The broker builds only RTC and RTM; the
// parser understands all of them.
const (
	ServiceRTC       ServiceType = 1
	ServiceRTM       ServiceType = 2
	ServiceStreaming ServiceType = 3
	ServiceFPA       ServiceType = 4
	ServiceChat      ServiceType = 5
	ServiceFCDN      ServiceType = 6
	ServiceAPaaS     ServiceType = 7
	ServiceRTM2      ServiceType = 8
)

var serviceNames = [...]string{
	ServiceRTC:       "rtc",
	ServiceRTM:       "rtm",
	ServiceStreaming: "streaming",
	ServiceFPA:       "fpa",
	ServiceChat:      "chat",
	ServiceFCDN:      "fcdn",
	ServiceAPaaS:     "apaas",
	ServiceRTM2:      "rtm2",
}

// String returns the service's lower-case name, e.g. "rtc".
func (t ServiceType) String() string {
	if int(t) < len(serviceNames) && serviceNames[t] != "" {
		return serviceNames[t]
	}
	return fmt.Sprintf("service(%d)", uint16(t))
}

// Privilege ids. Ids are scoped by service type: RTC uses 1–4, RTM and RTM2
// use 1 for login, and the legacy 006 format uses 1–4 and 1000.
const (
	PrivilegeJoinChannel  uint16 = 1
	PrivilegePublishAudio uint16 = 2
	PrivilegePublishVideo uint16 = 3
	PrivilegePublishData  uint16 = 4
	PrivilegeLogin        uint16 = 1
	PrivilegeChatUser     uint16 = 1
	PrivilegeChatApp      uint16 = 2
	PrivilegeRTMLogin006  uint16 = 1000
)

// PrivilegeName names privilege id of service type t (e.g. "join_channel"), or
// returns "" when the id is not defined for that service.
func PrivilegeName(t ServiceType, id uint16) string {
	switch t {
	case ServiceRTC:
		switch id {
		case PrivilegeJoinChannel:
			return "join_channel"
		case PrivilegePublishAudio:
			return "publish_audio"
		case PrivilegePublishVideo:
			return "publish_video"
		case PrivilegePublishData:
			return "publish_data"
		}
	case ServiceRTM, ServiceFPA, ServiceRTM2:
		if id == PrivilegeLogin {
			return "login"
		}
	case ServiceStreaming:
		switch id {
		case 1:
			return "publish_mix_stream"
		case 2:
			return "publish_raw_stream"
		}
	case ServiceChat:
		switch id {
		case PrivilegeChatUser:
			return "user"
		case PrivilegeChatApp:
			return "app"
		}
	case ServiceFCDN:
		switch id {
		case 1:
			return "publish"
		case 2:
			return "play"
		}
	case ServiceAPaaS:
		switch id {
		case 1:
			return "room_user"
		case 2:
			return "user"
		case 3:
			return "app"
		}
	}
	return ""
}

// Privilege is one entry of a token's privilege map. In a 007 token Expire is
// seconds after the token's issue time; in a 006 token it is an absolute Unix
// time. In both, 0 means the privilege itself never expires.
type Privilege struct {
	ID     uint16
	Expire uint32
}

// Service is one decoded service record of an AccessToken2. Which fields are
// used depends on Type; the others are zero.
type Service struct {
	Type       ServiceType
	Privileges []Privilege // in wire order (builders write ascending ids)
	// Channel is the channel name of RTC, Streaming and FCDN services.
	Channel string
	// UID is the RTC uid as packed (decimal uid, or user account; "" = any
	// uid), or the account of a Streaming or FCDN service.
	UID string
	// User is the user id of RTM, Chat and RTM2 services, or the user uuid of
	// an APaaS service.
	User string
	// Room and Role are the room uuid and role of an APaaS service.
	Room string
	Role int16
	// Permissions is the resource permission table of an RTM2 service.
	Permissions []RTMPermission
}

// RTMPermission grants one permission type (0 read, 1 write) on the named
// resources of one resource type (0 message channels, 1 stream channels,
// 2 group channels, 3 server groups, 4 users) in an RTM2 service.
type RTMPermission struct {
	ResourceType   uint16
	PermissionType uint16
	Resources      []string
}

// AccessToken is a decoded AccessToken2 ("007"). It keeps the signed bytes
// exactly as received, so Verify never depends on re-encoding.
type AccessToken struct {
	AppID     string
	IssuedAt  uint32 // Unix seconds
	Expire    uint32 // seconds after IssuedAt
	Salt      uint32
	Services  []Service
	Signature []byte

	signingInfo []byte
}

// ExpiresAt returns the Unix time at which the token itself expires.
func (t *AccessToken) ExpiresAt() int64 {
	return int64(t.IssuedAt) + int64(t.Expire)
}

// PrivilegeDeadline returns the Unix time at which a privilege with value rel
// (seconds after IssuedAt) runs out. never is true for 0: such a privilege does
// not expire on its own, only the token does.
func (t *AccessToken) PrivilegeDeadline(rel uint32) (unix int64, never bool) {
	if rel == 0 {
		return 0, true
	}
	return int64(t.IssuedAt) + int64(rel), false
}
