//go:build !linux

package notify

import (
	"errors"
	"net"
)

// Writes that never wait are implemented on Linux only (try_linux.go):
// elsewhere every connection is written by a goroutine of its own.
type (
	tryRaw    struct{}
	tryWriter struct{}
)

func newTryWriter() *tryWriter    { return nil }
func (c *frameConn) initTry()     {}
func (c *frameConn) canTry() bool { return false }

func (c *frameConn) tryWritev(*tryWriter, net.Buffers) (int, error) {
	return 0, errors.New("notify: not supported")
}
