package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPI describes every route of the API (OpenAPI 3.1). A test walks the
// router and this document so that neither has a path the other lacks.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(openAPI)
}
