package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/broker-dev/broker/internal/token"
)

// TestExamples_BrowserPagesGetTokensInChromium loads each example page from
// broker dev in headless Chromium and checks that the page received a token
// that verifies and carries alice's uid.
func TestExamples_BrowserPagesGetTokensInChromium(t *testing.T) {
	var chrome string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chrome = p
			break
		}
	}
	if chrome == "" {
		t.Fatal("Chromium is missing: the example pages are proven in a real browser (apt-get install chromium)")
	}
	banner := startDev(t, nil)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(banner)
	idToken := strings.TrimSpace(httpGet(t, base+"/dev/oidc/token?user=alice", ""))
	var me struct{ UID uint32 }
	if err := json.Unmarshal([]byte(httpGet(t, base+"/v1/me", idToken)), &me); err != nil || me.UID == 0 {
		t.Fatalf("/v1/me: %+v %v", me, err)
	}
	req, _ := http.NewRequest("POST", base+"/v1/token-urls", nil)
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ TokenURL string }
	if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create a token URL: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	browserCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(browserCtx,
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelTab)

	for _, page := range []string{
		"/examples/bearer.html",
		"/examples/tokenurl.html?" + url.Values{"tokenUrl": {created.TokenURL}, "uid": {fmt.Sprint(me.UID)}}.Encode(),
	} {
		if err := chromedp.Do(tabCtx, chromedp.Navigate(base+page),
			chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent !== "working…"`, chromedp.WithPollingTimeout(20*time.Second)),
		); err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		status, err := chromedp.Run(tabCtx, chromedp.Text(chromedp.CSS("#status")))
		if err != nil {
			t.Fatal(err)
		}
		result, err := chromedp.Run(tabCtx, chromedp.Text(chromedp.CSS("#result")))
		if err != nil || status != "ok" {
			t.Fatalf("%s: status %q, %v\n%s", page, status, err, result)
		}
		var body struct{ RTCToken string }
		if err := json.Unmarshal([]byte(result), &body); err != nil {
			t.Fatalf("%s: result is not the token answer: %v\n%s", page, err, result)
		}
		tok, err := token.Parse(body.RTCToken)
		if err != nil || len(tok.Services) == 0 || !tok.Verify(devAppCert) || tok.Services[0].UID != fmt.Sprint(me.UID) || tok.Services[0].Channel != "demo-1" {
			t.Fatalf("%s: the token (not printed) does not parse (%v), verify, or belong to alice (uid %d) on demo-1", page, err, me.UID)
		}
	}
}
