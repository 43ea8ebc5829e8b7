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
	reasonTokenType      = "token_type"           // typ header wrong for the issuer's TokenType
	reasonRequiredClaim  = "required_claim"       // Config.RequiredClaims not satisfied
	reasonScope          = "scope"                // Config.RequiredScopes not granted
	reasonUnknownIssuer  = "unknown_issuer"       // iss names no configured issuer (Issuers only)
	reasonUnavailable    = "provider_unavailable" // 503: not reached yet, or unreachable for a kid not cached
)

// Values of the issuer label that are not issuer names (Config.Name refuses
// them): the issuer with an empty Name, and requests refused before a token
// could be matched to an issuer.
const (
	defaultIssuerLabel = "default"
	unknownIssuerLabel = "unknown"
)

// issuerReasons are the reasons counted for a configured issuer.
var issuerReasons = []string{
	reasonMissing, reasonScheme, reasonTooLarge, reasonMalformed, reasonAlgorithm,
	reasonUnknownKey, reasonSignature, reasonIssuer, reasonAudience, reasonExpired,
	reasonNotYetValid, reasonIssuedInFuture, reasonClaims, reasonNonce,
	reasonTokenType, reasonRequiredClaim, reasonScope, reasonUnavailable,
}

// dispatchReasons are the reasons counted under issuer="unknown": what
// Issuers refuses before it knows which issuer a token claims to come from.
var dispatchReasons = []string{
	reasonMissing, reasonScheme, reasonTooLarge, reasonMalformed, reasonUnknownIssuer,
}

// metricVecs are the auth counters, registered once per Registerer and
// curried per issuer (forIssuer), so their cardinality is bounded by the
// configured issuers times the fixed reasons.
type metricVecs struct {
	rejections *prometheus.CounterVec
	refreshes  *prometheus.CounterVec
}

// metrics are the counters of one issuer (or of the "unknown" issuer label):
// the vectors curried with its issuer label.
type metrics struct {
	rejections *prometheus.CounterVec // by reason
	refreshes  *prometheus.CounterVec // by result
}

// newMetricVecs creates the auth counters and registers them with reg unless
// it is nil.
func newMetricVecs(reg prometheus.Registerer) (*metricVecs, error) {
	m := &metricVecs{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_auth_rejections_total",
			Help: `Requests refused by bearer authentication, by issuer (its name, "default", or "unknown" before a token names a configured issuer) and reason.`,
		}, []string{"issuer", "reason"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_oidc_key_refreshes_total",
			Help: "Fetches of an OIDC provider's key set, by issuer and result (ok, error).",
		}, []string{"issuer", "result"}),
	}
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

// forIssuer returns the counters of the issuer labelled label. Every reason
// (and result) it can count starts at zero so dashboards see the full set.
func (m *metricVecs) forIssuer(label string) *metrics {
	l := prometheus.Labels{"issuer": label}
	c := &metrics{rejections: m.rejections.MustCurryWith(l), refreshes: m.refreshes.MustCurryWith(l)}
	reasons := issuerReasons
	if label == unknownIssuerLabel {
		reasons = dispatchReasons
	} else {
		c.refreshes.WithLabelValues("ok")
		c.refreshes.WithLabelValues("error")
	}
	for _, r := range reasons {
		c.rejections.WithLabelValues(r)
	}
	return c
}
