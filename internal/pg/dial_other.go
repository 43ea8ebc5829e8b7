//go:build !linux

package pg

import "syscall"

// tcpUserTimeoutControl does nothing where TCP_USER_TIMEOUT does not exist;
// keepalives alone notice a dead peer there.
func tcpUserTimeoutControl(string, string, syscall.RawConn) error { return nil }
