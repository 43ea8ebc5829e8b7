package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// promptURL is a prompt writer that hands on the first authorization URL
// written to it.
type promptURL chan string

func (p promptURL) Write(b []byte) (int, error) {
	if u := regexp.MustCompile(`http://\S+/auth\?\S+`).Find(b); u != nil {
		select {
		case p <- string(u):
		default:
		}
	}
	return len(b), nil
}

// TestLoopbackLogin_TheBrowserGetsItsPage: the browser that brings the code
// back to the loopback port gets the whole "logged in" page, however soon
// the login ends after the code is redeemed (the port closes as the
// command goes on). Repeated, because closing the server under the
// handler lost the page only now and then.
func TestLoopbackLogin_TheBrowserGetsItsPage(t *testing.T) {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" || r.ParseForm() != nil || r.PostForm.Get("code") != "the-code" || r.PostForm.Get("code_verifier") == "" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at","token_type":"Bearer","expires_in":3600}`)
	}))
	defer idp.Close()
	for i := range 50 {
		cfg := &oauth2.Config{ClientID: "cli", Endpoint: oauth2.Endpoint{AuthURL: idp.URL + "/auth", TokenURL: idp.URL + "/token"}}
		prompt := make(promptURL, 1)
		type result struct {
			tok *oauth2.Token
			err error
		}
		done := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		go func() {
			tok, err := loopbackLogin(ctx, cfg, "nonce", prompt)
			done <- result{tok, err}
		}()
		auth, err := url.Parse(<-prompt)
		if err != nil {
			t.Fatal(err)
		}
		q := auth.Query()
		callback := q.Get("redirect_uri") + "?" + url.Values{"code": {"the-code"}, "state": {q.Get("state")}}.Encode()
		resp, err := http.Get(callback)
		if err != nil {
			t.Fatalf("login %d: the browser's request to the loopback port: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "You are logged in") {
			t.Fatalf("login %d: the browser got %d %q (%v)", i, resp.StatusCode, body, err)
		}
		res := <-done
		cancel()
		if res.err != nil || res.tok.AccessToken != "at" {
			t.Fatalf("login %d: %v, %+v", i, res.err, res.tok)
		}
	}
}
