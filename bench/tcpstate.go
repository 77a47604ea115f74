package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
)

// tcpSocket is one line of /proc/net/tcp: the kernel's view of a socket,
// including the server's end of a client connection. The harness watches
// stallers this way, without reading from them: the server has evicted a
// staller once its end is no longer ESTABLISHED (it closed the socket).
type tcpSocket struct {
	state       int
	txQ, rxQ    int64 // bytes not yet acknowledged by the peer; bytes not yet read
	established bool
}

// tcpKey names a socket by its local and remote address as the kernel
// prints them.
func tcpKey(local, remote *net.TCPAddr) string {
	return procAddr(local) + " " + procAddr(remote)
}

func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	// The kernel prints the address in host byte order (little-endian here).
	return fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(ip), a.Port)
}

// readTCP returns the sockets whose keys are in want.
func readTCP(want map[string]bool) (map[string]tcpSocket, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]tcpSocket{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := bytes.Fields(sc.Bytes())
		if len(fl) < 5 {
			continue
		}
		key := string(fl[1]) + " " + string(fl[2])
		if !want[key] {
			continue
		}
		st, _ := strconv.ParseInt(string(fl[3]), 16, 32)
		tx, rx, _ := bytes.Cut(fl[4], []byte(":"))
		txQ, _ := strconv.ParseInt(string(tx), 16, 64)
		rxQ, _ := strconv.ParseInt(string(rx), 16, 64)
		out[key] = tcpSocket{state: int(st), txQ: txQ, rxQ: rxQ, established: st == 1}
	}
	return out, sc.Err()
}
