package pg

import (
	"syscall"
	"time"
)

// sysTCPUserTimeout is TCP_USER_TIMEOUT of linux/tcp.h, which package syscall
// does not name.
const sysTCPUserTimeout = 18

// tcpUserTimeoutControl sets TCP_USER_TIMEOUT on a TCP socket, so that data a
// silent peer never acknowledges ends the connection in seconds.
func tcpUserTimeoutControl(network, _ string, c syscall.RawConn) error {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil // a Unix socket has no peer to lose
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, sysTCPUserTimeout, int(tcpUserTimeout/time.Millisecond))
	})
	if err != nil {
		return err
	}
	return serr
}
