package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/token"
)

// runToken is "broker token mint|inspect": mint an AccessToken2 offline, or
// decode (and optionally verify) a 007 or 006 token. It never consults policy:
// it is a tool for operators who already hold the app certificate.
func runToken(_ context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	const help = "usage: broker token mint [flags]      mint an AccessToken2 (007)\n" +
		"       broker token inspect [flags] TOKEN  decode a 007 or 006 token as JSON\n"
	if len(args) == 0 {
		io.WriteString(stderr, help)
		return usageError("token: give a subcommand: mint or inspect")
	}
	switch args[0] {
	case "mint":
		return runTokenMint(args[1:], getenv, stdout, stderr)
	case "inspect":
		return runTokenInspect(args[1:], getenv, stdout)
	case "help", "-h", "-help", "--help":
		io.WriteString(stdout, help)
		return nil
	}
	io.WriteString(stderr, help)
	return usageError(fmt.Sprintf("token: unknown subcommand %q", args[0]))
}

func runTokenMint(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token mint", stdout)
	appID := fs.String("app-id", "", "Agora App ID (default $BROKER_APP_ID, then $APP_ID)")
	appCert := fs.String("app-cert", "", "Agora App Certificate (default $BROKER_APP_CERTIFICATE, then $APP_CERTIFICATE;\nprefer the environment: other local users can see command lines)")
	channel := fs.String("channel", "", "channel name; a '*' in it requests a wildcard token")
	uid := fs.String("uid", "", "numeric uid, 0…4294967295 (0 = any uid); or use --account")
	account := fs.String("account", "", "user account to bind the token to; or use --uid")
	role := fs.String("role", "subscriber", "publisher or subscriber")
	expire := fs.String("expire", "3600", "lifetime in seconds, 1…86400, for the token and its privileges")
	rtmUser := fs.String("rtm-user", "", "also grant RTM login to this user id")
	issuedAt := fs.String("issued-at", "", "issue time in Unix seconds (default now); with --salt makes output reproducible")
	salt := fs.String("salt", "", "salt, 1…4294967295 (default random)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("token mint: unexpected argument " + strconv.Quote(fs.Arg(0)))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	id := firstNonEmpty(*appID, getenv("BROKER_APP_ID"), getenv("APP_ID"))
	if id == "" {
		return errors.New("token mint: no app id: give --app-id or set BROKER_APP_ID")
	}
	cert := firstNonEmpty(*appCert, getenv("BROKER_APP_CERTIFICATE"), getenv("APP_CERTIFICATE"))
	if cert == "" {
		return errors.New("token mint: no app certificate: set BROKER_APP_CERTIFICATE or give --app-cert")
	}
	b, err := token.NewBuilder(id, cert)
	if err != nil {
		return fmt.Errorf("token mint: %w", err)
	}

	req := token.RTCRequest{Channel: *channel, AllowWildcard: strings.Contains(*channel, "*"), RTMUser: *rtmUser}
	switch {
	case set["uid"] == set["account"]:
		return errors.New("token mint: give exactly one of --uid or --account")
	case set["uid"]:
		if req.UID, err = parseUint32("uid", *uid, 0); err != nil {
			return err
		}
	default:
		req.Account = *account
		if req.Account == "" {
			return errors.New("token mint: invalid --account: must not be empty")
		}
	}
	switch *role {
	case "publisher":
		req.Role = token.RolePublisher
	case "subscriber":
		req.Role = token.RoleSubscriber
	default:
		return fmt.Errorf("token mint: invalid --role %q: must be publisher or subscriber", *role)
	}
	// The range 1…86400 is the token package's to enforce and explain.
	if req.Expire, err = parseUint32("expire", *expire, 0); err != nil {
		return err
	}
	if set["issued-at"] {
		if req.IssuedAt, err = parseUint32("issued-at", *issuedAt, 1); err != nil {
			return err
		}
	}
	if set["salt"] {
		if req.Salt, err = parseUint32("salt", *salt, 1); err != nil {
			return err
		}
	}
	s, err := b.RTC(req)
	if err != nil {
		return fmt.Errorf("token mint: %w", err)
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
}

// parseUint32 parses a decimal flag value in min…2^32−1.
func parseUint32(name, s string, min uint64) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < min || n > math.MaxUint32 {
		return 0, fmt.Errorf("token mint: invalid --%s %q: must be a whole number in %d…%d", name, s, min, uint64(math.MaxUint32))
	}
	return uint32(n), nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func runTokenInspect(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := newFlagSet("token inspect", stdout)
	cert := fs.String("app-cert", "", "verify the signature with this App Certificate; exit 1 if it does not match\n(default $BROKER_APP_CERTIFICATE, then $APP_CERTIFICATE; none: no check)")
	projectName := fs.String("project", "", "007 only: verify with the certificates of this configured project (the file --config or $BROKER_CONFIG\nnames, and the environment): the token must carry the project's App ID and be signed with one of them")
	configPath := fs.String("config", "", "with --project: the configuration file (default $BROKER_CONFIG)")
	nowFlag := fs.String("now", "", "judge expiry at this Unix time (default now)")
	channel := fs.String("channel", "", "006 only: the channel name the token was made for (needed to verify)")
	uid := fs.String("uid", "", "006 only: the uid string the token was made for, exactly as packed\n(decimal, or empty for uid 0; needed to verify)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: broker token inspect [flags] TOKEN\n\nflags:")
		fs.PrintDefaults()
	}
	// Flags may come before or after the token.
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("token inspect: give the token to inspect")
	}
	tok := fs.Arg(0)
	if err := parseFlags(fs, fs.Args()[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("token inspect: give exactly one token")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	now := time.Now().Unix()
	if set["now"] {
		n, err := strconv.ParseInt(*nowFlag, 10, 64)
		if err != nil {
			return fmt.Errorf("token inspect: invalid --now %q: must be Unix seconds", *nowFlag)
		}
		now = n
	}
	if set["project"] {
		if set["app-cert"] || !strings.HasPrefix(tok, token.Version007) {
			return usageError("token inspect: --project verifies 007 tokens, and replaces --app-cert")
		}
		p, err := configuredProject(*projectName, *configPath, getenv)
		if err != nil {
			return err
		}
		return inspect007(tok, now, &p, stdout)
	}
	var check *project
	if c := firstNonEmpty(*cert, getenv("BROKER_APP_CERTIFICATE"), getenv("APP_CERTIFICATE")); c != "" {
		check = &project{Certificates: []string{c}}
	}
	switch {
	case strings.HasPrefix(tok, token.Version006):
		if check != nil && !set["channel"] {
			return errors.New("token inspect: verifying a 006 token needs --channel (and --uid unless the uid is 0): the token stores only their CRCs")
		}
		var c *string
		if check != nil {
			c = &check.Certificates[0]
		}
		return inspect006(tok, now, c, *channel, *uid, stdout)
	case strings.HasPrefix(tok, token.Version007):
		return inspect007(tok, now, check, stdout)
	}
	return errors.New("token inspect: not a token: it must start with 007 or 006")
}

// inspectedPrivilege is a privilege as inspect prints it. ExpiresAt is an
// RFC 3339 time, or null when the privilege never expires (value 0). Inspect
// speaks the API's conventions: camelCase names, RFC 3339 times.
type inspectedPrivilege struct {
	ID        uint16  `json:"id"`
	Name      string  `json:"name,omitempty"`
	Value     uint32  `json:"value"`
	ExpiresAt *string `json:"expiresAt"`
	Expired   bool    `json:"expired"`
}

// rfc3339 formats Unix seconds as an RFC 3339 time in UTC.
func rfc3339(unix int64) string { return time.Unix(unix, 0).UTC().Format(time.RFC3339) }

type inspectedService struct {
	Type        uint16                `json:"type"`
	Name        string                `json:"name"`
	Channel     *string               `json:"channel,omitempty"`
	UID         *string               `json:"uid,omitempty"`
	Account     *string               `json:"account,omitempty"`
	User        *string               `json:"user,omitempty"`
	Room        *string               `json:"room,omitempty"`
	Role        *int16                `json:"role,omitempty"`
	Permissions []inspectedPermission `json:"permissions,omitempty"`
	Privileges  []inspectedPrivilege  `json:"privileges"`
}

// inspectedPermission is one row of an RTM2 permission table.
type inspectedPermission struct {
	ResourceType   uint16   `json:"resourceType"`
	PermissionType uint16   `json:"permissionType"`
	Resources      []string `json:"resources"`
}

// unknownService says where decoding stopped.
type unknownService struct {
	Index int    `json:"index"`
	Type  uint16 `json:"type"`
}

type inspected007 struct {
	Version       string             `json:"version"`
	AppID         string             `json:"appId"`
	IssuedAt      string             `json:"issuedAt"`
	ExpireSeconds uint32             `json:"expireSeconds"`
	ExpiresAt     string             `json:"expiresAt"`
	Expired       bool               `json:"expired"`
	Salt          uint32             `json:"salt"`
	Services      []inspectedService `json:"services"`
	// Unknown is set when decoding stopped at a service of unknown type.
	Unknown        *unknownService `json:"unknownService,omitempty"`
	SignatureValid *bool           `json:"signatureValid,omitempty"`
	// Project and Certificate say, with --project, which project's
	// certificate (1: the one that signs now, 2: the other) verified the
	// signature; Certificate is 0 when none did.
	Project     string `json:"project,omitempty"`
	Certificate *int   `json:"certificate,omitempty"`
}

// configuredProject reads the configuration as serve would (the file, then
// the environment) and returns the project called name.
func configuredProject(name, path string, getenv func(string) string) (project, error) {
	only := map[string]bool{"BROKER_APP_ID": true, "BROKER_APP_CERTIFICATE": true, "BROKER_DEFAULT_TTL": true, "BROKER_MAX_TTL": true}
	var args []string
	if path != "" {
		args = []string{"--config", path}
	}
	cfg, err := loadConfig(flag.NewFlagSet("token inspect", flag.ContinueOnError), args, getenv, only)
	if err != nil {
		return project{}, fmt.Errorf("token inspect: %w", err)
	}
	var names []string
	for _, p := range cfg.Projects {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return project{}, fmt.Errorf("token inspect: no project %q is configured (the projects are %s)", name, strings.Join(names, ", "))
}

// inspect007 decodes s and, with check, verifies it: against each of the
// project's certificates, and for a named project its App ID too.
func inspect007(s string, now int64, check *project, stdout io.Writer) error {
	t, err := token.Parse(s)
	var unknown *token.UnknownServiceError
	if err != nil && !errors.As(err, &unknown) {
		return fmt.Errorf("token inspect: %w", err)
	}
	out := inspected007{
		Version: token.Version007, AppID: t.AppID, IssuedAt: rfc3339(int64(t.IssuedAt)), ExpireSeconds: t.Expire,
		ExpiresAt: rfc3339(t.ExpiresAt()), Expired: now >= t.ExpiresAt(), Salt: t.Salt,
		Services: make([]inspectedService, 0, len(t.Services)),
	}
	if unknown != nil {
		out.Unknown = &unknownService{Index: unknown.Index, Type: unknown.Type}
	}
	for _, svc := range t.Services {
		is := inspectedService{Type: uint16(svc.Type), Name: svc.Type.String(), Privileges: []inspectedPrivilege{}}
		switch svc.Type {
		case token.ServiceRTC:
			is.Channel, is.UID = &svc.Channel, &svc.UID
		case token.ServiceStreaming, token.ServiceFCDN:
			is.Channel, is.Account = &svc.Channel, &svc.UID
		case token.ServiceRTM, token.ServiceChat:
			is.User = &svc.User
		case token.ServiceAPaaS:
			is.Room, is.User, is.Role = &svc.Room, &svc.User, &svc.Role
		case token.ServiceRTM2:
			is.User = &svc.User
			for _, p := range svc.Permissions {
				is.Permissions = append(is.Permissions, inspectedPermission(p))
			}
		}
		for _, p := range svc.Privileges {
			ip := inspectedPrivilege{ID: p.ID, Name: token.PrivilegeName(svc.Type, p.ID), Value: p.Expire}
			if at, never := t.PrivilegeDeadline(p.Expire); !never {
				ts := rfc3339(at)
				ip.ExpiresAt, ip.Expired = &ts, now >= at
			}
			is.Privileges = append(is.Privileges, ip)
		}
		out.Services = append(out.Services, is)
	}
	var valid bool
	if check != nil {
		which := 0
		for i, cert := range check.Certificates {
			if (check.AppID == "" || t.AppID == check.AppID) && t.Verify(cert) {
				which = i + 1
				break
			}
		}
		valid = which > 0
		out.SignatureValid = &valid
		if check.Name != "" {
			out.Project, out.Certificate = check.Name, &which
		}
	}
	if err := writeJSON(stdout, out); err != nil {
		return err
	}
	if unknown != nil {
		return fmt.Errorf("token inspect: %w", unknown)
	}
	if check != nil && !valid {
		return exitStatus(1)
	}
	return nil
}

type inspected006 struct {
	Version        string               `json:"version"`
	AppID          string               `json:"appId"`
	Salt           uint32               `json:"salt"`
	ExpiresAt      string               `json:"expiresAt"`
	Expired        bool                 `json:"expired"`
	ChannelCRC     uint32               `json:"channelCrc32"`
	UIDCRC         uint32               `json:"uidCrc32"`
	Privileges     []inspectedPrivilege `json:"privileges"`
	SignatureValid *bool                `json:"signatureValid,omitempty"`
}

func inspect006(s string, now int64, cert *string, channel, uid string, stdout io.Writer) error {
	t, err := token.Parse006(s)
	if err != nil {
		return fmt.Errorf("token inspect: %w", err)
	}
	out := inspected006{
		Version: token.Version006, AppID: t.AppID, Salt: t.Salt,
		ExpiresAt: rfc3339(int64(t.Expire)), Expired: now >= int64(t.Expire),
		ChannelCRC: t.ChannelCRC, UIDCRC: t.UIDCRC, Privileges: []inspectedPrivilege{},
	}
	for _, p := range t.Privileges {
		ip := inspectedPrivilege{ID: p.ID, Value: p.Expire}
		if p.Expire != 0 { // 006 values are absolute; 0 = no privilege-level expiry
			at := int64(p.Expire)
			ts := rfc3339(at)
			ip.ExpiresAt, ip.Expired = &ts, now >= at
		}
		switch p.ID {
		case token.PrivilegeRTMLogin006:
			ip.Name = "rtm_login"
		default:
			ip.Name = token.PrivilegeName(token.ServiceRTC, p.ID)
		}
		out.Privileges = append(out.Privileges, ip)
	}
	var valid bool
	if cert != nil {
		valid = t.Verify(*cert, channel, uid)
		out.SignatureValid = &valid
	}
	if err := writeJSON(stdout, out); err != nil {
		return err
	}
	if cert != nil && !valid {
		return exitStatus(1)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
