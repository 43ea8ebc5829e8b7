package httpapi

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the networks whose peers may say who the client is
// (BROKER_TRUSTED_PROXIES): the load balancers and ingresses in front of the
// broker.
type TrustedProxies []netip.Prefix

// ParseTrustedProxies reads a comma-separated list of CIDRs or addresses.
func ParseTrustedProxies(list string) (TrustedProxies, error) {
	var out TrustedProxies
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (t TrustedProxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type clientIPKey struct{}

// clientIPFrom returns the client address the clientAddress middleware found.
func clientIP(r *http.Request) string {
	if s, ok := r.Context().Value(clientIPKey{}).(string); ok {
		return s
	}
	return peerAddr(r)
}

func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientAddress finds the client's address once per request, for the
// issuance log, the access log and the rate limiter's messages: the peer's,
// unless the peer is a trusted proxy. Then the forwarding headers (Forwarded,
// RFC 7239, else X-Forwarded-For) are read right to left, each hop trusted
// only as far as the one after it is a trusted proxy; the first hop that is
// not, or that does not read as an address, ends the walk. A header from an
// untrusted peer is never read.
func clientAddress(trusted TrustedProxies) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := peerAddr(r)
			if len(trusted) > 0 {
				ip = trusted.client(r, ip)
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip)))
		})
	}
}

// client walks the forwarding hops from the peer inwards.
func (t TrustedProxies) client(r *http.Request, peer string) string {
	current, err := netip.ParseAddr(peer)
	if err != nil {
		return peer
	}
	hops := forwardedFor(r.Header.Values("Forwarded"))
	if hops == nil {
		for _, v := range r.Header.Values("X-Forwarded-For") {
			for _, h := range strings.Split(v, ",") {
				hops = append(hops, strings.TrimSpace(h))
			}
		}
	}
	for i := len(hops) - 1; i >= 0 && t.trusts(current); i-- {
		a, ok := hopAddr(hops[i])
		if !ok {
			break
		}
		current = a
	}
	return current.Unmap().String()
}

// forwardedFor returns the for= values of Forwarded headers, in order, or
// nil when there is none.
func forwardedFor(values []string) []string {
	var out []string
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					out = append(out, val)
				}
			}
		}
	}
	return out
}

// hopAddr reads one hop: an address, optionally quoted, bracketed (IPv6) or
// with a port. "unknown", obfuscated names and anything else do not read.
func hopAddr(h string) (netip.Addr, bool) {
	h = strings.Trim(strings.TrimSpace(h), `"`)
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	a, err := netip.ParseAddr(h)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
