package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
)

// The kernel's view of sockets, through the sock_diag netlink interface
// (what ss(8) uses), including the server's end of a client connection.
// The harness watches stallers this way, without reading from them: the
// server has evicted a staller once its end is no longer ESTABLISHED (it
// closed the socket). /proc/net/tcp would do the same but formats every
// socket of the machine as text, tens of milliseconds per read on a busy
// machine; a binary dump that skips TIME_WAIT costs well under one.

// tcpSocket is one socket as the kernel reports it.
type tcpSocket struct {
	state    int
	txQ, rxQ int64 // bytes not yet acknowledged by the peer; bytes not yet read
}

func (s tcpSocket) established() bool { return s.state == 1 }

// tcpKey names a socket by its local and remote address.
type tcpKey struct {
	local, remote [4]byte
	lport, rport  uint16
}

func makeKey(local, remote *net.TCPAddr) tcpKey {
	var k tcpKey
	copy(k.local[:], local.IP.To4())
	copy(k.remote[:], remote.IP.To4())
	k.lport, k.rport = uint16(local.Port), uint16(remote.Port)
	return k
}

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpTimeWait      = 6
	tcpListen        = 10
	diagMsgLen       = 72 // struct inet_diag_msg
)

// readTCP dumps the machine's IPv4 TCP sockets (except TIME_WAIT and
// LISTEN) and returns those whose keys are in want.
func readTCP(want map[tcpKey]bool) (map[tcpKey]tcpSocket, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)

	// nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
	req := make([]byte, 16+56)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence
	req[16] = syscall.AF_INET
	req[17] = syscall.IPPROTO_TCP
	ne.PutUint32(req[20:], ^uint32(1<<tcpTimeWait|1<<tcpListen)) // states wanted
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, err
	}

	out := map[tcpKey]tcpSocket{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return out, nil
			case syscall.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: error %d", int32(ne.Uint32(m.Data)))
			}
			d := m.Data
			if len(d) < diagMsgLen {
				continue
			}
			// inet_diag_msg: family, state, timer, retrans; then the socket
			// id (ports big-endian at 4 and 6, addresses at 8 and 24), then
			// expires, rqueue, wqueue, uid, inode from offset 52.
			var k tcpKey
			k.lport = binary.BigEndian.Uint16(d[4:])
			k.rport = binary.BigEndian.Uint16(d[6:])
			copy(k.local[:], d[8:12])
			copy(k.remote[:], d[24:28])
			if !want[k] {
				continue
			}
			out[k] = tcpSocket{
				state: int(d[1]),
				rxQ:   int64(ne.Uint32(d[56:])),
				txQ:   int64(ne.Uint32(d[60:])),
			}
		}
	}
}
