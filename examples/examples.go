// Package examples embeds the example client pages (examples/web) that
// `broker dev` serves under /examples/: how a browser app gets a token.
package examples

import "embed"

// Web holds web/*.html.
//
//go:embed web
var Web embed.FS
