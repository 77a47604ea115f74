//go:build !linux

package notify

import (
	"errors"
	"net"
)

// tryState is empty where writes that never wait are not implemented:
// every connection is written by a goroutine of its own.
type tryState struct{}

func (c *frameConn) initTry()     {}
func (c *frameConn) canTry() bool { return false }

func (c *frameConn) tryWritev(net.Buffers) (int, error) {
	return 0, errors.New("notify: not supported")
}
