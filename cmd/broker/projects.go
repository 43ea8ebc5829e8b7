package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

// projectSpec is one entry of the configuration file's projects list, as
// written.
type projectSpec struct {
	Line  int
	Name  string
	AppID string
	// Certificates are the App certificates, one or two: the first signs,
	// either verifies (Agora's primary and secondary certificate). They come
	// from certificates (literal) or certificateFiles (a file each).
	Certificates       []string
	CertificateFiles   []string
	Issuers            []string
	IssuersSet         bool // issuers was given (an empty list is an error, not "every issuer")
	MaxTTL, DefaultTTL string
	// The project's Agora RESTful account (revocations' bans) and NCS
	// secret (POST /v1/agora/events/{project}); the secrets from files.
	AgoraCustomerID, AgoraCustomerSecretFile, AgoraNCSSecretFile string
}

// projectKeys are the keys a projects entry may have.
var projectKeys = []string{"name", "appID", "certificates", "certificateFiles", "issuers", "maxTTL", "defaultTTL",
	"agoraCustomerID", "agoraCustomerSecretFile", "agoraNCSSecretFile"}

// project is one Agora project as the broker serves it: the file's entries,
// or the one named default that BROKER_APP_ID and BROKER_APP_CERTIFICATE
// define (config.Projects).
type project struct {
	Name         string
	AppID        string
	Certificates []string // one or two; the first signs
	// Issuers are the names of the issuers whose users may use the project
	// ("default": the issuer without a name); nil: every issuer.
	Issuers            []string
	DefaultTTL, MaxTTL time.Duration
	// Agora is the project's RESTful account and NCS secret (zero fields:
	// none).
	Agora  agoraAccount
	source string // where it was configured, for messages
}

// agoraAccount is what a project holds for Agora's RESTful API (the bans of
// revocations) and its notifications.
type agoraAccount struct {
	CustomerID, CustomerSecret string
	NCSSecret                  string
}

// readProjects reads the projects list: each entry a mapping of projectKeys.
func readProjects(path string, n *yaml.Node) ([]projectSpec, error) {
	return readEntries(path, "projects", "project", n, func(line int) projectSpec { return projectSpec{Line: line} }, (*projectSpec).set)
}

// set stores one key of a projects entry.
func (s *projectSpec) set(key string, v *yaml.Node) error {
	str, list := entryValues(key, v)
	switch key {
	case "name":
		return str(&s.Name)
	case "appID":
		return str(&s.AppID)
	case "certificates":
		return list(&s.Certificates)
	case "certificateFiles":
		return list(&s.CertificateFiles)
	case "issuers":
		s.IssuersSet = true
		return list(&s.Issuers)
	case "maxTTL":
		return str(&s.MaxTTL)
	case "defaultTTL":
		return str(&s.DefaultTTL)
	case "agoraCustomerID":
		return str(&s.AgoraCustomerID)
	case "agoraCustomerSecretFile":
		return str(&s.AgoraCustomerSecretFile)
	case "agoraNCSSecretFile":
		return str(&s.AgoraNCSSecretFile)
	}
	return fmt.Errorf("unknown key %q%s", key, suggest(key, projectKeys))
}

// resolveProjects checks the file's projects and returns them, with the
// project named default that BROKER_APP_ID defines (when set) first. A
// project's TTLs default to BROKER_DEFAULT_TTL and BROKER_MAX_TTL. Errors
// name the file and line; none quotes a certificate.
func resolveProjects(c *config, path string, specs []projectSpec) ([]project, error) {
	var out []project
	if c.AppID != "" {
		out = append(out, project{Name: policy.DefaultProject, AppID: c.AppID, Certificates: []string{c.AppCertificate},
			DefaultTTL: c.DefaultTTL, MaxTTL: c.MaxTTL, source: "BROKER_APP_ID",
			Agora: agoraAccount{CustomerID: c.AgoraCustomerID, CustomerSecret: c.AgoraCustomerSecret, NCSSecret: c.AgoraNCSSecret}})
	} else if c.AgoraCustomerID != "" || c.AgoraNCSSecret != "" {
		return nil, errors.New("BROKER_AGORA_CUSTOMER_ID and BROKER_AGORA_NCS_SECRET are the default project's (BROKER_APP_ID), which is not set: give the file's projects agoraCustomerID, agoraCustomerSecretFile and agoraNCSSecretFile")
	}
	issuerNames := map[string]bool{}
	if len(c.Issuers) == 0 {
		issuerNames["default"] = true // the BROKER_OIDC_ISSUER one
	}
	for _, is := range c.Issuers {
		name := is.Name
		if name == "" {
			name = "default"
		}
		issuerNames[name] = true
	}
	var errs []error
	for _, s := range specs {
		at := fmt.Sprintf("%s line %d: project %q", path, s.Line, s.Name)
		fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(at+": "+format, args...)) }
		p := project{Name: s.Name, AppID: s.AppID, Issuers: s.Issuers, DefaultTTL: c.DefaultTTL, MaxTTL: c.MaxTTL,
			source: fmt.Sprintf("%s line %d", path, s.Line)}
		if err := policy.CheckProjectName(s.Name); err != nil {
			fail("%v", err)
		}
		if i := slices.IndexFunc(out, func(o project) bool { return o.Name == s.Name }); i >= 0 {
			fail("is also defined by %s; name it once", out[i].source)
		}
		if !isHex32(s.AppID) {
			fail("appID must be 32 hexadecimal characters")
		}
		p.Certificates = s.Certificates
		switch {
		case len(s.Certificates) > 0 && len(s.CertificateFiles) > 0:
			fail("give certificates or certificateFiles, not both")
		case len(s.CertificateFiles) > 0:
			p.Certificates = nil
			for _, f := range s.CertificateFiles {
				b, err := os.ReadFile(f)
				if err != nil {
					fail("certificateFiles: %v", errors.Unwrap(err))
					continue
				}
				p.Certificates = append(p.Certificates, strings.TrimSpace(string(b)))
			}
		}
		if n := len(p.Certificates); n < 1 || n > 2 {
			fail("needs one or two App certificates (the first signs; during a rotation, both are valid), not %d", n)
		}
		for i, cert := range p.Certificates {
			if !isHex32(cert) {
				fail("certificate %d must be 32 hexadecimal characters", i+1)
			}
		}
		if len(p.Certificates) == 2 && p.Certificates[0] == p.Certificates[1] {
			fail("its two certificates are the same")
		}
		if s.IssuersSet && len(s.Issuers) == 0 {
			fail("issuers is empty: name the issuers whose users may use the project, or leave the key out for every issuer")
		}
		for _, name := range s.Issuers {
			if !issuerNames[name] {
				fail("issuers: %q is not a configured issuer (the issuer without a name is \"default\")", name)
			}
		}
		for _, t := range []struct {
			key, value string
			dst        *time.Duration
		}{{"maxTTL", s.MaxTTL, &p.MaxTTL}, {"defaultTTL", s.DefaultTTL, &p.DefaultTTL}} {
			if t.value == "" {
				continue
			}
			d, err := time.ParseDuration(t.value)
			if err != nil || d < time.Second || d > 24*time.Hour {
				fail("%s must be a duration from 1s to 24h, such as 1h", t.key)
				continue
			}
			*t.dst = d
		}
		if s.DefaultTTL == "" {
			p.DefaultTTL = min(p.DefaultTTL, p.MaxTTL)
		}
		p.Agora.CustomerID = s.AgoraCustomerID
		for _, f := range []struct {
			key, path string
			dst       *string
		}{{"agoraCustomerSecretFile", s.AgoraCustomerSecretFile, &p.Agora.CustomerSecret}, {"agoraNCSSecretFile", s.AgoraNCSSecretFile, &p.Agora.NCSSecret}} {
			if f.path == "" {
				continue
			}
			b, err := os.ReadFile(f.path)
			if err != nil {
				fail("%s: %v", f.key, errors.Unwrap(err))
				continue
			}
			if *f.dst = strings.TrimSpace(string(b)); *f.dst == "" {
				fail("%s: %s is empty", f.key, f.path)
			}
		}
		if (p.Agora.CustomerID == "") != (p.Agora.CustomerSecret == "") {
			fail("agoraCustomerID and agoraCustomerSecretFile go together: set both (revocations ban live sessions) or neither")
		}
		if p.DefaultTTL > p.MaxTTL {
			fail("defaultTTL must not exceed maxTTL")
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// brokerProjects builds the broker's projects: a token builder each, signing
// with the first certificate; issuer names as auth.Identity qualifiers
// ("default" is the issuer without a name, qualifier "").
func brokerProjects(ps []project) ([]broker.Project, error) {
	out := make([]broker.Project, len(ps))
	for i, p := range ps {
		b, err := token.NewBuilder(p.AppID, p.Certificates[0])
		if err != nil {
			return nil, fmt.Errorf("project %q: %w", p.Name, err)
		}
		out[i] = broker.Project{Name: p.Name, Tokens: b, DefaultTTL: p.DefaultTTL, MaxTTL: p.MaxTTL}
		for _, name := range p.Issuers {
			if name == "default" {
				name = ""
			}
			out[i].Issuers = append(out[i].Issuers, name)
		}
	}
	return out, nil
}

// projectNames returns the names of ps.
func projectNames(ps []project) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}
