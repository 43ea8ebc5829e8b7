package token

import "fmt"

// Limits on what the builder encodes (SPEC.md §2.9). Agora's own builders check
// none of them except the shape of the app id and certificate.
const (
	MaxChannelLen = 63    // bytes; Agora: "less than 64 bytes"
	MaxAccountLen = 255   // bytes
	MaxRTMUserLen = 64    // bytes
	MaxExpire     = 86400 // seconds: Agora honours at most 24 hours
)

// InputError reports a build input that is out of range. Field names the input
// ("app_id", "app_certificate", "channel", "account", "rtm_user", "role",
// "expire"); Reason says what is wrong. It never contains the certificate.
type InputError struct {
	Field  string
	Reason string
}

func (e *InputError) Error() string {
	return "token: invalid " + e.Field + ": " + e.Reason
}

// nameChars is Agora's character set for channel names and user accounts:
// letters, digits, space and ! # $ % & ( ) + - : ; < = . > ? @ [ ] ^ _ { } | ~ ,
var nameChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range []byte(" !#$%&()+-:;<=.>?@[]^_{}|~,") {
		t[c] = true
	}
	return t
}()

// ValidateChannel reports whether ch is a channel name Agora accepts: 1–63
// bytes of the allowed character set. A '*' is accepted only when
// allowWildcard is true, so that a wildcard token (channel "*" or "Agora*") is
// always an explicit choice; '*' never occurs in a real channel name.
func ValidateChannel(ch string, allowWildcard bool) error {
	if err := checkName("channel", ch, MaxChannelLen, allowWildcard); err != nil {
		return err
	}
	return nil
}

// ValidateAccount reports whether s is an RTC user account Agora accepts:
// 1–255 bytes of the channel-name character set.
func ValidateAccount(s string) error {
	if err := checkName("account", s, MaxAccountLen, false); err != nil {
		return err
	}
	return nil
}

// validateRTMUser reports whether s is an RTM user id the broker encodes:
// 1–64 bytes of the channel-name character set.
func validateRTMUser(s string) error {
	if err := checkName("rtm_user", s, MaxRTMUserLen, false); err != nil {
		return err
	}
	return nil
}

// checkName returns a typed error (never a nil *InputError in an error) so
// callers can return its result directly.
func checkName(field, s string, maxLen int, allowWildcard bool) *InputError {
	if s == "" {
		return &InputError{Field: field, Reason: "must not be empty"}
	}
	if len(s) > maxLen {
		return &InputError{Field: field, Reason: fmt.Sprintf("is %d bytes, at most %d allowed", len(s), maxLen)}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if nameChars[c] || (c == '*' && allowWildcard) {
			continue
		}
		if c == '*' {
			return &InputError{Field: field, Reason: fmt.Sprintf("'*' at byte %d: wildcards must be requested explicitly", i)}
		}
		if c < 0x20 || c > 0x7e {
			return &InputError{Field: field, Reason: fmt.Sprintf("byte 0x%02x at offset %d is not allowed (printable ASCII only)", c, i)}
		}
		return &InputError{Field: field, Reason: fmt.Sprintf("character %q at byte %d is not allowed", c, i)}
	}
	return nil
}

// validateExpire checks a lifetime in seconds: 1 … MaxExpire.
func validateExpire(v uint32) error {
	if v < 1 || v > MaxExpire {
		return &InputError{Field: "expire", Reason: fmt.Sprintf("is %d seconds, must be 1…%d", v, MaxExpire)}
	}
	return nil
}

// validateRole accepts exactly the two RTC roles.
func validateRole(r Role) error {
	if r != RolePublisher && r != RoleSubscriber {
		return &InputError{Field: "role", Reason: fmt.Sprintf("is %d, must be publisher (1) or subscriber (2)", int(r))}
	}
	return nil
}

// validateHex32 checks the shape of an app id or certificate: exactly 32 hex
// characters in either case. The value itself never enters the error.
func validateHex32(field, s string) error {
	if len(s) != 32 {
		return &InputError{Field: field, Reason: fmt.Sprintf("is %d characters, must be 32 hex characters", len(s))}
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return &InputError{Field: field, Reason: fmt.Sprintf("character at position %d is not hex, must be 32 hex characters", i)}
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// AccountAsUID reports whether an account reads as an RTC uid, and which.
// AccessToken2 carries a uid as its decimal string, so the account "N" names
// exactly the user with uid N. It reads generously, as an SDK or a server that
// parses numbers might: surrounding spaces, one leading '+' and leading zeros
// are accepted, and 0 (Agora's "any uid") counts too. Anything that is not a
// number in 0…4294967295 this way is an ordinary account.
func AccountAsUID(account string) (uint32, bool) {
	s := trimSpaces(account)
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	if len(s) > 10 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		n = n*10 + uint64(s[i]-'0')
	}
	if n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

func trimSpaces(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}
