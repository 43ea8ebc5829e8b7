package problem

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
)

func TestWrite_DoesNotEscapeHTML(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, httptest.NewRequest("GET", "/v1/me", nil), apperr.New(apperr.Unauthorized, "send Authorization: Bearer <ID token> & retry"))
	if body := w.Body.String(); !strings.Contains(body, "Bearer <ID token> & retry") {
		t.Fatalf("problem body %s escapes HTML", body)
	}
}

func TestWrite_UnavailableCarriesRetryAfter(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, httptest.NewRequest("GET", "/", nil), apperr.New(apperr.Unavailable, "down"))
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("%d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}
