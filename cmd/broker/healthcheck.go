package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// runHealthcheck is `broker healthcheck [URL]`: exit 0 when URL (default the
// local /healthz) answers 200, 1 otherwise. Container images have no curl;
// this is their HEALTHCHECK.
func runHealthcheck(ctx context.Context, args []string, _ func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", stdout)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: broker healthcheck [-timeout 3s] [URL]\n\nExits 0 when URL (default http://127.0.0.1:8080/healthz) answers 200 OK, 1 otherwise.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageError("healthcheck takes at most one URL")
	}
	target := "http://127.0.0.1:8080/healthz"
	if fs.NArg() == 1 {
		target = fs.Arg(0)
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError("healthcheck: URL must be an absolute http(s) URL")
	}
	if *timeout <= 0 {
		return usageError("healthcheck: -timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return usageError("healthcheck: " + err.Error())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %s: %v\n", u.Redacted(), errorWithoutURL(err))
		return exitStatus(1)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: %s answered %s\n", u.Redacted(), resp.Status)
		return exitStatus(1)
	}
	fmt.Fprintln(stdout, "healthy")
	return nil
}

// errorWithoutURL strips the *url.Error wrapper, whose text repeats the URL
// (with any credentials in it).
func errorWithoutURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
