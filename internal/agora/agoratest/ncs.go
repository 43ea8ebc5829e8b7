package agoratest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// SignV2 returns the Agora-Signature-V2 header Agora's NCS sends with body:
// the HMAC-SHA256 of the raw body under the NCS secret, in lowercase hex.
func SignV2(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}
