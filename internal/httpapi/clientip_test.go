package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClientIP_TrustsForwardingHeadersOnlyFromTrustedProxies(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		headers    map[string]string
		want       string
	}{
		{"untrusted peer's header is ignored", "203.0.113.9:5000", map[string]string{"X-Forwarded-For": "1.2.3.4"}, "203.0.113.9"},
		{"trusted peer, one hop", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.1"}, "198.51.100.1"},
		{"client spoofs an extra hop", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"two trusted proxies", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "1.2.3.4, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"a single trusted address", "192.0.2.7:80", map[string]string{"X-Forwarded-For": "198.51.100.2"}, "198.51.100.2"},
		{"malformed hop stops at the proxy", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "1.2.3.4, not-an-ip"}, "10.1.2.3"},
		{"every hop trusted: the innermost", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"Forwarded wins over X-Forwarded-For", "10.1.2.3:5000", map[string]string{"Forwarded": `for=198.51.100.3;proto=https`, "X-Forwarded-For": "1.1.1.1"}, "198.51.100.3"},
		{"Forwarded with IPv6 and port", "10.1.2.3:5000", map[string]string{"Forwarded": `for="[2001:db8::1]:4711"`}, "2001:db8::1"},
		{"Forwarded with a port", "10.1.2.3:5000", map[string]string{"Forwarded": `for="198.51.100.4:1234"`}, "198.51.100.4"},
		{"Forwarded spoofed extra element", "10.1.2.3:5000", map[string]string{"Forwarded": `for=1.2.3.4, for=198.51.100.5`}, "198.51.100.5"},
		{"Forwarded unknown", "10.1.2.3:5000", map[string]string{"Forwarded": `for=unknown`}, "10.1.2.3"},
		{"Forwarded obfuscated", "10.1.2.3:5000", map[string]string{"Forwarded": `for=_hidden`}, "10.1.2.3"},
		{"IPv6 peer trusted", "[fd00::1]:5000", map[string]string{"X-Forwarded-For": "2001:db8::2"}, "2001:db8::2"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:5000", map[string]string{"X-Forwarded-For": "198.51.100.6"}, "198.51.100.6"},
		{"no header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"zone in a hop does not read", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "fe80::1%eth0"}, "10.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			if got := trusted.client(r, peerAddr(r)); got != tc.want {
				t.Fatalf("client = %q, want %q", got, tc.want)
			}
		})
	}
	var none TrustedProxies
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.2.3:1"
	r.Header.Set("X-Forwarded-For", "1.2.3.4")
	var seen string
	clientAddress(none)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = clientIP(r) })).ServeHTTP(httptest.NewRecorder(), r)
	if seen != "10.1.2.3" {
		t.Fatalf("with no trusted proxies the client is %q, want the peer", seen)
	}
}
