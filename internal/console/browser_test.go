package console_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/console"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
	"github.com/broker-dev/broker/internal/tooltest"
)

// chromium returns the browser to drive; the test fails without one, since
// the console's login and pages are only proven in a real browser.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is missing: the console's browser test needs it (apt-get install chromium)")
	return ""
}

// screenshots is where the browser test leaves its screenshots: $BROKER_ARTIFACTS,
// or broker-console-screenshots in the temporary directory.
func screenshots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("BROKER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "broker-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// tab drives one browser tab through the console, failing the test on the
// first step that does not work.
type tab struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	name string // who is browsing, for screenshot names
}

func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		body, _ := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
		b.t.Fatalf("%s: %s: %v\nat %s:\n%s", b.name, what, err, loc, body)
	}
}

// text returns the visible text of the first element matching css.
func (b *tab) text(css string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		b.t.Fatalf("%s: read %s: %v", b.name, css, err)
	}
	return s
}

func (b *tab) wantText(css string, parts ...string) {
	b.t.Helper()
	got := b.text(css)
	for _, p := range parts {
		if !strings.Contains(got, p) {
			b.t.Errorf("%s: %s reads %q, want it to contain %q", b.name, css, got, p)
		}
	}
}

// shot saves a full-page PNG of the current page as <name>-<page>.png.
func (b *tab) shot(page string) string {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("%s: screenshot of %s: %v", b.name, page, err)
	}
	path := filepath.Join(b.dir, b.name+"-"+page+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// login goes to the console, meets Dex's login form, and logs in.
func (b *tab) login(base, email, password string) {
	b.t.Helper()
	b.do("reach Dex's login form from the console",
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.ID("login")),
	)
	b.do("log in at Dex",
		chromedp.SendKeys(chromedp.ID("login"), email),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("submit-login")),
		chromedp.WaitVisible(chromedp.CSS("header.top form.logout")),
	)
}

// axeCore returns the source of axe-core (pinned in tools/axe, fetched once
// with npm); the test fails without it.
func axeCore(t *testing.T) string {
	t.Helper()
	path, err := tooltest.NPM("axe", "axe-core/axe.min.js")
	if err != nil {
		t.Fatalf("axe-core: %v", err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

// checkPage opens url at width and fails the test when the page scrolls
// sideways or axe-core finds a serious or critical violation on it.
func (b *tab) checkPage(url string, width int64, axeSource string) {
	b.t.Helper()
	b.do(fmt.Sprintf("open %s at %d px", url, width), chromedp.EmulateViewport(width, 900), chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("main")))
	wide, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		b.t.Fatalf("%s at %d px: %v", url, width, err)
	}
	if wide {
		// Name the widest elements that stick out, to say what to fix.
		culprits, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`JSON.stringify([...document.querySelectorAll("body *")]
			.filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest("td, th, caption"))
			.slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "") + " " + Math.round(e.getBoundingClientRect().right) + "px"))`))
		b.t.Errorf("%s at %d px scrolls sideways: %s", url, width, culprits)
	}
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](axeSource+";true")); err != nil {
		b.t.Fatalf("load axe-core into %s: %v", url, err)
	}
	found, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(
		r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({id: v.id, impact: v.impact, help: v.help,
			nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))))`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("axe-core on %s: %v", url, err)
	}
	if found != "[]" {
		b.t.Errorf("axe-core on %s at %d px: %s", url, width, found)
	}
}

func TestConsole_InChromiumAgainstDex(t *testing.T) {
	chrome := chromium(t)
	dir := screenshots(t)
	ctx := context.Background()

	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	dex := dextest.Start(t, dextest.Options{RedirectURIs: []string{base + "/console/callback"}})

	engine, err := policy.Open(ctx, policy.NewMemStore(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	if err := engine.Bootstrap(ctx, []string{"group:" + dextest.GroupAdmins}); err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewMemory(bytes.Repeat([]byte{5}, audit.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	v, err := auth.NewIssuers(ctx, []auth.Config{{Issuer: dex.Issuer(), Audiences: []string{dextest.ClientID}, Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	waitReady(t, v)
	c, err := console.New(console.Config{
		Issuer: dex.Issuer(), ClientID: dextest.ClientID, ClientSecret: dextest.ClientSecret,
		RedirectURL: base + "/console/callback", SessionKey: bytes.Repeat([]byte{6}, console.MinSessionKeyLen),
	}, console.Deps{Verifier: v, Policies: engine, Audit: log, Sessions: sessions.NewMemory(), Joins: review.NewMemory(), Orphans: true,
		Revocations: &revoke.Service{Store: revoke.NewMemory(), Policies: engine, Log: log, MaxTTL: 24 * time.Hour, Now: time.Now,
			Agora:   func(string) (string, revoke.Banner) { return "0123456789abcdef0123456789abcdef", nil },
			Qualify: func(string) (string, bool) { return "", true }}})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.StripSlashes)
	r.Mount("/console", c.Handler())
	srv.Config.Handler = r
	srv.Start()
	t.Cleanup(srv.Close)

	// Traffic for the overview and the issuance log, through the same log the
	// broker writes: a day of decisions for a team, then a token granted to
	// the developer and a request refused just now.
	now := time.Now()
	var granted, denied, records int
	for h := 23; h >= 1; h-- {
		g, d := 2+(h*7)%6, 0
		if h%4 == 0 {
			d = 2
		} else if h%3 == 0 {
			d = 1
		}
		for i := range g + d {
			rec := audit.Record{Time: now.Add(-time.Duration(h)*time.Hour + time.Duration(i)*time.Minute),
				Subject: fmt.Sprintf("member-%d", i), Account: fmt.Sprintf("member-%d", i), Service: audit.ServiceRTC,
				Channel: fmt.Sprintf("standup-%d", h), Role: "subscriber", Decision: audit.DecisionGranted, GrantedTTL: time.Hour}
			if i >= g {
				rec.Decision, rec.GrantedTTL, rec.Channel = audit.DecisionDenied, 0, "finance"
			}
			if _, err := log.Append(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		granted, denied, records = granted+g, denied+d, records+g+d
	}
	devSubject := dex.Subject(dextest.DeveloperUserID)
	for _, rec := range []audit.Record{
		{Issuer: dex.Issuer(), Subject: devSubject, Account: devSubject, UID: 1001, Groups: dextest.DeveloperGroups,
			Service: audit.ServiceRTC, Channel: "demo-1", Role: "publisher", RequestedTTL: time.Hour, GrantedTTL: time.Hour,
			Decision: audit.DecisionGranted, Reason: `allowed by rule #5 allow group:developers publisher "demo-*" maxTtl=3600s`,
			Rule: `#5 allow group:developers publisher "demo-*" maxTtl=3600s`, PolicyVersion: 2, RequestID: "req-demo-1",
			ClientIP: "192.0.2.10", UserAgent: "AgoraRTC/4.20", TokenFingerprint: log.Fingerprint("007token")},
		{Subject: devSubject, Account: devSubject, UID: 1001, Groups: dextest.DeveloperGroups, Service: audit.ServiceRTC,
			Channel: "board-room", Role: "publisher", Decision: audit.DecisionDenied,
			Reason: `no rule allows user:` + devSubject + ` to be publisher on "board-room"`},
	} {
		if _, err := log.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	granted, denied, records = granted+1, denied+1, records+2

	// One bound for the whole browser session, so a page that never comes
	// fails the test with the step that waited instead of hanging it.
	browserCtx, cancelBrowser := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelBrowser)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(browserCtx,
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancelAlloc)
	adminCtx, cancelAdmin := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelAdmin)
	admin := &tab{t: t, ctx: adminCtx, dir: dir, name: "admin"}

	admin.login(base, dextest.AdminEmail, dextest.AdminPassword)
	admin.wantText(".total.granted", strconv.Itoa(granted), "tokens granted")
	admin.wantText(".total.denied", strconv.Itoa(denied), "requests denied")
	admin.do("see the chart", chromedp.WaitVisible(chromedp.CSS("figure.chart svg")))
	admin.wantText("header.top", dextest.AdminEmail, "Policies", "Try it", "Issuance log")
	admin.shot("overview")

	admin.do("open the policies", chromedp.Navigate(base+"/console/policies"), chromedp.WaitVisible(chromedp.CSS("form.rule-form")))
	admin.do("submit a rule with a bad subject",
		chromedp.SendKeys(chromedp.ID("subject"), "developers"),
		chromedp.SendKeys(chromedp.ID("channel"), "demo-*"),
		chromedp.Click(chromedp.CSS("form.rule-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".field.invalid .field-error")),
	)
	admin.wantText(".field.invalid", "Subject", `say whom "developers" names: group:developers for a group`)
	admin.shot("policies-invalid")
	admin.do("correct it and add the rule",
		chromedp.SetValue(chromedp.ID("subject"), "group:developers"),
		chromedp.SetValue(chromedp.ID("role"), "publisher"),
		chromedp.SetValue(chromedp.ID("maxTtlSeconds"), "3600"),
		chromedp.Click(chromedp.CSS("form.rule-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("p.flash")),
	)
	admin.wantText("p.flash", "was added")
	admin.wantText("table.rules", "group:developers", "demo-*", "3600 s")
	admin.shot("policies")

	admin.do("ask whether the developer may publish on demo-1",
		chromedp.Navigate(base+"/console/try"),
		chromedp.SendKeys(chromedp.ID("subject"), devSubject),
		chromedp.SendKeys(chromedp.ID("groups"), dextest.GroupDevelopers),
		chromedp.SendKeys(chromedp.ID("channel"), "demo-1"),
		chromedp.Click(chromedp.CSS("form.try-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("section.decision")),
	)
	admin.wantText("section.decision", "Allowed", `allow group:developers publisher "demo-*" maxTtl=3600s`)
	admin.wantText("table.explain", "yes", `allows publisher on "demo-1"`)
	admin.shot("try")

	admin.do("open the issuance log", chromedp.Navigate(base+"/console/audit"), chromedp.WaitVisible(chromedp.CSS("table.records")))
	admin.wantText("table.records", "demo-1", "granted", "board-room", "denied")
	admin.shot("audit")
	admin.do("filter the denials",
		chromedp.SetValue(chromedp.ID("f-decision"), "denied"),
		chromedp.Click(chromedp.CSS("form.filters button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("table.records caption.filtered")),
	)
	if got := admin.text("table.records tbody"); strings.Contains(got, "demo-1") || !strings.Contains(got, "board-room") {
		t.Errorf("denied filter shows %q", got)
	}
	admin.do("open the granted record",
		chromedp.Navigate(base+"/console/audit?decision=granted"),
		chromedp.Click(chromedp.CSS("table.records tbody a")),
		chromedp.WaitVisible(chromedp.CSS("dl.record")),
	)
	admin.wantText("dl.record", "demo-1", log.Fingerprint("007token"), "1001")
	admin.shot("record")
	admin.do("verify the chain", chromedp.Navigate(base+"/console/audit/verify"), chromedp.WaitVisible(chromedp.CSS("section.decision")))
	admin.wantText("section.decision", "The chain is intact", strconv.Itoa(records)+" records checked")
	admin.shot("verify")

	// Every page, at a desktop's width and a phone's (390 px): no sideways
	// scrolling of the page, and no serious or critical accessibility
	// violation by axe-core.
	axeSource := axeCore(t)
	pages := []string{"/console/", "/console/policies", "/console/policies/history", "/console/policies/import",
		"/console/try?subject=" + devSubject + "&groups=developers&channel=demo-1&role=publisher",
		"/console/policies?role=publisher&appliesTo=demo-1", "/console/policies/delete-matching?channel=demo-*", "/console/policies/1/delete",
		"/console/audit", "/console/audit?decision=granted&from=yesterday", "/console/audit/verify", "/console/audit/lookup",
		"/console/audit/access?channel=demo-1&role=publisher&from=" + now.Add(-24*time.Hour).UTC().Format(time.RFC3339) + "&to=" + now.Add(time.Hour).UTC().Format(time.RFC3339),
		"/console/audit/access?subject=" + devSubject + "&role=publisher&from=" + now.Add(-24*time.Hour).UTC().Format(time.RFC3339) + "&to=" + now.Add(time.Hour).UTC().Format(time.RFC3339),
		"/console/revocations", "/console/nowhere"}
	for _, width := range []int64{1280, 390} {
		for _, page := range pages {
			admin.checkPage(base+page, width, axeSource)
		}
	}
	admin.do("back to the overview at a desktop's width", chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.CSS("figure.chart svg")))

	admin.do("log out",
		chromedp.Click(chromedp.CSS("form.logout button")),
		chromedp.WaitVisible(chromedp.CSS("a.button")),
	)
	admin.wantText("main", "logged out")

	// The developer, in a browser context of their own (no shared cookies),
	// holds no admin right.
	devCtx, cancelDev := chromedp.NewContext(adminCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancelDev)
	dev := &tab{t: t, ctx: devCtx, dir: dir, name: "developer"}
	dev.login(base, dextest.DeveloperEmail, dextest.DeveloperPassword)
	dev.wantText("main h1", "No access")
	dev.wantText("main", "read on api:policies or api:audit", "group:"+dextest.GroupDevelopers)
	if nav := dev.text("header.top"); strings.Contains(nav, "Policies") || strings.Contains(nav, "Issuance log") {
		t.Errorf("a user without rights is offered %q", nav)
	}
	dev.shot("no-access")
	dev.do("try the policies anyway", chromedp.Navigate(base+"/console/policies"), chromedp.WaitVisible(chromedp.CSS("section.noaccess")))
	dev.wantText("section.noaccess", "read on api:policies")
}
