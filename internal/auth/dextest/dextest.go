// Package dextest runs a real Dex OpenID provider for tests: it builds Dex
// once from the pinned tools/dex module, starts it on a free loopback port
// with two users, and hands out real ID tokens through the password grant.
// It is test-only: it must never be imported by production code, and it
// fails (never skips) a test when Dex cannot be built or started.
package dextest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/tooltest"
)

// The static OAuth2 client Dex knows the broker as.
const (
	ClientID     = "broker"
	ClientSecret = "dextest-client-secret"
)

// CLIClientID is the public client (no secret) `broker login` uses, with the
// device grant.
const CLIClientID = "broker-cli"

// The two local users. Dex's password database logs users in by email.
const (
	AdminEmail        = "admin@example.com"
	AdminPassword     = "admin-password"
	AdminUserID       = "0b4e5e0c-0f5d-4d8e-9b0e-5a2d6f1c0001"
	DeveloperEmail    = "dev@example.com"
	DeveloperPassword = "dev-password"
	DeveloperUserID   = "0b4e5e0c-0f5d-4d8e-9b0e-5a2d6f1c0002"
)

// Group names carried by the users' tokens.
const (
	GroupAdmins     = "broker-admins"
	GroupDevelopers = "developers"
)

// AdminGroups and DeveloperGroups are the groups each user's token carries.
var (
	AdminGroups     = []string{GroupAdmins, GroupDevelopers}
	DeveloperGroups = []string{GroupDevelopers}
)

// bcrypt hashes (cost 10) of AdminPassword and DeveloperPassword.
const (
	adminHash     = "$2a$10$6VjgBaqTFkkVhBwpNjQxgudlpemXF9ilFEbMz3NS/haXhTuRsjl8u"
	developerHash = "$2a$10$nRqPP3r.nRFOOCjHyDPgxOkNDtgaCBkl0KcQZ1ruSKOHqChDGRxVC"
)

// connectorID is Dex's id for its password database connector.
const connectorID = "local"

// Options adjusts the Dex instance.
type Options struct {
	// RedirectURIs are the redirect URIs registered for the "broker" client,
	// e.g. the console's callback. Default: http://127.0.0.1/callback.
	RedirectURIs []string
	// TrailingSlash makes the issuer http://127.0.0.1:<port>/dex/: Dex then
	// serves the same endpoints, but its discovery document and its tokens'
	// iss end with the slash.
	TrailingSlash bool
}

// Dex is a running Dex server.
type Dex struct {
	issuer string
	cmd    *exec.Cmd
	log    *tooltest.Output
	exited chan struct{}
}

// Start builds (or reuses) the Dex binary and runs it until the test ends.
func Start(t testing.TB, opts Options) *Dex {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatalf("dextest: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("dextest: %v", err)
	}
	issuer := fmt.Sprintf("http://127.0.0.1:%d/dex", port)
	if opts.TrailingSlash {
		issuer += "/"
	}
	d := &Dex{
		issuer: issuer,
		log:    &tooltest.Output{},
		exited: make(chan struct{}),
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	cfg, err := json.MarshalIndent(config(d.issuer, port, opts), "", "  ")
	if err != nil {
		t.Fatalf("dextest: encode config: %v", err)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatalf("dextest: write config: %v", err)
	}

	d.cmd = exec.Command(bin, "serve", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("dextest: start %s: %v", bin, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("dextest: Dex output:\n%s", d.log.String())
		}
	})
	if err := d.waitReady(30 * time.Second); err != nil {
		t.Fatalf("dextest: %v\nDex output:\n%s", err, d.log.String())
	}
	return d
}

// Issuer is Dex's issuer URL, http://127.0.0.1:<port>/dex (with a trailing
// slash when Options.TrailingSlash).
func (d *Dex) Issuer() string { return d.issuer }

// endpoint is the URL of one of Dex's endpoints, e.g. "/token".
func (d *Dex) endpoint(path string) string { return strings.TrimSuffix(d.issuer, "/") + path }

// Subject is the sub claim Dex puts in tokens of the local user with userID:
// base64url(protobuf{1: userID, 2: connector id}).
func (d *Dex) Subject(userID string) string {
	var b []byte
	for i, s := range []string{userID, connectorID} {
		b = append(b, byte((i+1)<<3|2), byte(len(s)))
		b = append(b, s...)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Token logs username in with the password grant and returns the ID token
// (scopes openid, email, profile, groups; audience ClientID).
func (d *Dex) Token(t testing.TB, username, password string) string {
	t.Helper()
	form := url.Values{
		"grant_type": {"password"},
		"username":   {username},
		"password":   {password},
		"scope":      {"openid email profile groups"},
	}
	req, err := http.NewRequest(http.MethodPost, d.endpoint("/token"), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("dextest: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(ClientID), url.QueryEscape(ClientSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("dextest: token request: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
		Desc    string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("dextest: token response (%s): %v", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || body.IDToken == "" {
		t.Fatalf("dextest: password grant for %s failed: %s: %s %s", username, resp.Status, body.Error, body.Desc)
	}
	return body.IDToken
}

// ApproveDevice is the person at a browser finishing a device login (RFC
// 8628): they enter userCode on Dex's device page, log in as username with
// password, and land on Dex's success page.
func (d *Dex) ApproveDevice(t testing.TB, userCode, username, password string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	// The code leads to the password form of the local connector.
	resp, err := browser.PostForm(d.endpoint("/device/auth/verify_code"), url.Values{"user_code": {userCode}})
	if err != nil {
		t.Fatalf("dextest: enter the device code: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	form := resp.Request.URL
	if resp.StatusCode != http.StatusOK || !strings.Contains(form.Path, "/auth/"+connectorID) {
		t.Fatalf("dextest: the device code led to %s %s, not the login form:\n%s", form, resp.Status, page)
	}
	resp, err = browser.PostForm(form.String(), url.Values{"login": {username}, "password": {password}})
	if err != nil {
		t.Fatalf("dextest: log in on the device page: %v", err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(resp.Request.URL.Path, "/device/callback") {
		t.Fatalf("dextest: the device login ended at %s %s, not the device callback:\n%s", resp.Request.URL, resp.Status, page)
	}
}

func (d *Dex) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	discovery := d.endpoint("/.well-known/openid-configuration")
	for {
		select {
		case <-d.exited:
			return errors.New("dex exited during startup")
		default:
		}
		resp, err := http.Get(discovery)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dex not serving %s after %s", discovery, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Dex) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

func config(issuer string, port int, opts Options) map[string]any {
	redirects := opts.RedirectURIs
	if len(redirects) == 0 {
		redirects = []string{"http://127.0.0.1/callback"}
	}
	user := func(email, hash, name, userID string, groups []string) map[string]any {
		return map[string]any{
			"email": email, "hash": hash, "username": name, "name": name,
			"userID": userID, "groups": groups, "emailVerified": true,
		}
	}
	return map[string]any{
		"issuer":  issuer,
		"storage": map[string]any{"type": "memory"},
		"web":     map[string]any{"http": fmt.Sprintf("127.0.0.1:%d", port)},
		"logger":  map[string]any{"level": "info", "format": "text"},
		"oauth2": map[string]any{
			"passwordConnector":  connectorID,
			"skipApprovalScreen": true,
			"grantTypes":         []string{"authorization_code", "password", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
		},
		"enablePasswordDB": true,
		// Static passwords carry groups since Dex v2.45.
		"staticPasswords": []any{
			user(AdminEmail, adminHash, "admin", AdminUserID, AdminGroups),
			user(DeveloperEmail, developerHash, "developer", DeveloperUserID, DeveloperGroups),
		},
		"staticClients": []any{
			map[string]any{"id": ClientID, "secret": ClientSecret, "name": "Broker", "redirectURIs": redirects},
			map[string]any{"id": CLIClientID, "name": "broker CLI", "public": true},
		},
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	buildOnce sync.Once
	builtPath string
	buildErr  error
)

// binary returns the path of a Dex binary built from tools/dex, building it
// into the Go build cache on first use (keyed by tools/dex/go.sum, so a Dex
// upgrade rebuilds).
func binary() (string, error) {
	buildOnce.Do(func() { builtPath, buildErr = tooltest.Build("dex", "github.com/dexidp/dex/cmd/dex") })
	return builtPath, buildErr
}
