package auth

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the values of broker_auth_rejections_total{reason}.
const (
	reasonMissing        = "missing"
	reasonScheme         = "wrong_scheme"
	reasonTooLarge       = "too_large"
	reasonMalformed      = "malformed"
	reasonAlgorithm      = "algorithm"
	reasonUnknownKey     = "unknown_key"
	reasonSignature      = "signature"
	reasonIssuer         = "issuer"
	reasonAudience       = "audience"
	reasonExpired        = "expired"
	reasonNotYetValid    = "not_yet_valid"
	reasonIssuedInFuture = "issued_in_future"
	reasonClaims         = "claims"
	reasonNonce          = "nonce"
	reasonUnavailable    = "provider_unavailable" // 503: not reached yet, or unreachable for a kid not cached
)

var allReasons = []string{
	reasonMissing, reasonScheme, reasonTooLarge, reasonMalformed, reasonAlgorithm,
	reasonUnknownKey, reasonSignature, reasonIssuer, reasonAudience, reasonExpired,
	reasonNotYetValid, reasonIssuedInFuture, reasonClaims, reasonNonce, reasonUnavailable,
}

type metrics struct {
	rejections *prometheus.CounterVec
	refreshes  *prometheus.CounterVec
}

// newMetrics creates the auth counters and registers them with reg unless it
// is nil. Every label value starts at zero so dashboards see the full set.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_auth_rejections_total",
			Help: "Requests refused by bearer authentication, by reason.",
		}, []string{"reason"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_oidc_key_refreshes_total",
			Help: "Fetches of the OIDC provider's key set, by result (ok, error).",
		}, []string{"result"}),
	}
	for _, r := range allReasons {
		m.rejections.WithLabelValues(r)
	}
	m.refreshes.WithLabelValues("ok")
	m.refreshes.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rejections, m.refreshes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("auth: register metrics: %w", err)
		}
	}
	return m, nil
}
