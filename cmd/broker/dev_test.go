package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/token"
)

// startDev runs `broker dev` until the test ends and returns its banner.
func startDev(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"broker", "dev", "--addr", "127.0.0.1:0"}, args...), envFunc(env), strings.NewReader(""), out, errOut)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker dev: %v\n%s", err, errOut.String())
		}
	})
	waitFor(t, "the dev banner", 20*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("broker dev exited early: %v\n%s", err, errOut.String())
		default:
		}
		return strings.Contains(out.String(), "\nTOKEN=")
	})
	return out.String()
}

func TestDev_PrintedCurlLineReturnsAnRTCToken(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("this test runs the printed curl line and needs curl: apt-get install curl")
	}
	banner := startDev(t, nil)
	if !strings.Contains(banner, "DUMMY App ID") {
		t.Fatalf("banner does not say the app is a dummy:\n%s", banner)
	}
	// Run at once, as a person pasting it would: the banner comes only once
	// the broker can verify its issuer's tokens.
	line := regexp.MustCompile(`(?m)^TOKEN=.*$`).FindString(banner)
	out, err := exec.Command("bash", "-c", line).Output()
	var resp map[string]any
	if err != nil || json.Unmarshal(out, &resp) != nil || resp["rtcToken"] == nil {
		t.Fatalf("the printed curl line, run as soon as it was printed: %v %s", err, out)
	}
	tok, err := token.Parse(resp["rtcToken"].(string))
	if err != nil || !tok.Verify(devAppCert) || tok.Services[0].Channel != "demo-1" || tok.Services[0].UID != "alice" {
		t.Fatalf("token %v: err %v", resp, err)
	}
}

// TestDev_RefusesRebindedHostNames plays a web page whose name was re-pointed
// at 127.0.0.1 (DNS rebinding): the peer is loopback, Host is the attacker's.
func TestDev_RefusesRebindedHostNames(t *testing.T) {
	banner := startDev(t, nil)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(banner)
	get := func(path, host string) (int, string) {
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/dev/oidc/token?user=alice", "/v1/policies", "/console/", "/healthz"} {
		if code, body := get(path, "rebind.attacker.example:18080"); code != http.StatusForbidden || strings.Contains(body, "eyJ") {
			t.Errorf("GET %s with a rebinding Host: %d %q, want 403 without a token", path, code, body)
		}
	}
	if code, body := get("/dev/oidc/token?user=alice", strings.TrimPrefix(base, "http://")); code != http.StatusOK || !strings.HasPrefix(body, "eyJ") {
		t.Errorf("GET the dev token with the loopback Host: %d %q", code, body)
	}
}

// TestDev_PrintedLineShowsTheIssuersError: a mistyped user gets the dev
// issuer's own message, not a confusing one about the bearer token.
func TestDev_PrintedLineShowsTheIssuersError(t *testing.T) {
	banner := startDev(t, nil)
	line := strings.Replace(regexp.MustCompile(`(?m)^TOKEN=.*$`).FindString(banner), "user=alice", "user=alise", 1)
	out, err := exec.Command("bash", "-c", line).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "alise") || strings.Contains(string(out), "bearer token") {
		t.Fatalf("mistyped user: %v %q", err, out)
	}
}

// TestDev_SameUIDAfterARestartAndBrokerAddr: without Postgres, alice keeps
// her uid across restarts; BROKER_ADDR picks the address.
func TestDev_SameUIDAfterARestartAndBrokerAddr(t *testing.T) {
	addr := freeLoopbackAddr(t)
	uidOf := func() string {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		out := &syncBuffer{}
		go func() {
			done <- run(ctx, []string{"broker", "dev"}, envFunc(map[string]string{"BROKER_ADDR": addr}), strings.NewReader(""), out, io.Discard)
		}()
		defer func() { cancel(); <-done }()
		waitFor(t, "the dev banner", 20*time.Second, func() bool { return strings.Contains(out.String(), "\nTOKEN=") })
		if !strings.Contains(out.String(), "http://"+addr) {
			t.Fatalf("broker dev ignored BROKER_ADDR %s:\n%s", addr, out)
		}
		tok := strings.TrimSpace(httpGet(t, "http://"+addr+"/dev/oidc/token?user=alice", ""))
		var me map[string]any
		if err := json.Unmarshal([]byte(httpGet(t, "http://"+addr+"/v1/me", tok)), &me); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(me["uid"])
	}
	if a, b := uidOf(), uidOf(); a != b || a == "" {
		t.Fatalf("alice's uid %s, then %s after a restart", a, b)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, url, bearer string) string {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestDev_SaysWhenARealAppIsConfigured(t *testing.T) {
	banner := startDev(t, map[string]string{"BROKER_APP_ID": e2eAppID, "BROKER_APP_CERTIFICATE": e2eAppCert})
	if strings.Contains(banner, "DUMMY") || !strings.Contains(banner, "your App ID and certificate") {
		t.Fatalf("banner:\n%s", banner)
	}
	if strings.Contains(banner, e2eAppCert) {
		t.Fatal("banner prints the certificate")
	}
}

func TestDev_RefusesNonLoopbackAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "192.168.1.5:8080", "example.com:80"} {
		code, _, stderr := runBroker(t, nil, "dev", "--addr", addr)
		if code != 2 || !strings.Contains(stderr, "only listens on loopback") {
			t.Errorf("--addr %s: exit %d, %q", addr, code, stderr)
		}
	}
}

func TestDev_RunsAgainstPostgresWithDatabaseURL(t *testing.T) {
	db := pgtest.NewEmpty(t)
	banner := startDev(t, map[string]string{"BROKER_DATABASE_URL": db.URL})
	if !strings.Contains(banner, "in Postgres") {
		t.Fatalf("banner:\n%s", banner)
	}
	var n int
	if err := db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM casbin_rule`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("example policies not stored in Postgres: %d rules, %v", n, err)
	}
}

// TestDev_ConsoleLoginThroughTheDevIssuer signs in to the console as a browser
// would: redirect to the dev issuer, pick alice, come back with a session.
func TestDev_ConsoleLoginThroughTheDevIssuer(t *testing.T) {
	banner := startDev(t, nil)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(banner)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(base + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `id="login-alice"`) {
		t.Fatalf("console did not lead to the dev sign-in page: %d\n%s", resp.StatusCode, page)
	}
	form := url.Values{"user": {"alice"}}
	hidden := regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	for _, m := range hidden.FindAllStringSubmatch(string(page), -1) {
		if m[1] != "user" {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
	}
	resp, err = browser.PostForm(resp.Request.URL.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/console/" || !strings.Contains(string(page), "alice") {
		t.Fatalf("after sign-in: %d at %s\n%s", resp.StatusCode, resp.Request.URL, page)
	}
	resp, err = browser.Get(base + "/console/policies")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "demo-*") {
		t.Fatalf("policies page: %d\n%s", resp.StatusCode, page)
	}
}

// TestDev_KeepsSignedAgoraEvents: with BROKER_AGORA_NCS_SECRET set, the
// broker keeps the channel events Agora signs, and refuses unsigned ones.
func TestDev_KeepsSignedAgoraEvents(t *testing.T) {
	secret := "ncs-secret-for-dev"
	banner := startDev(t, map[string]string{"BROKER_AGORA_NCS_SECRET": secret})
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(banner)
	body := `{"noticeId":"n-dev-1","productId":1,"eventType":105,"notifyMs":1765000000000,"payload":{"channelName":"demo-1","uid":42,"platform":7,"clientSeq":1,"ts":1765000000}}`
	post := func(sig string) int {
		req, err := http.NewRequest("POST", base+"/v1/agora/events", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if sig != "" {
			req.Header.Set("Agora-Signature-V2", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(agoratest.SignV2([]byte(secret), []byte(body))); code != 200 {
		t.Fatalf("a signed event: %d", code)
	}
	if code := post(""); code != 401 {
		t.Fatalf("an unsigned event: %d, want 401", code)
	}
}
