package main

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// The load generator's WebSocket framing (RFC 6455), just what a client
// that only receives needs: parse server frames (unmasked, possibly
// fragmented) and write small masked frames (pong, centrifuge commands).

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

var errProtocol = errors.New("bench: WebSocket protocol error from server")

// parseFrame reads one frame from the front of b. It returns n == 0 when b
// does not yet hold a whole frame; payload aliases b.
func parseFrame(b []byte) (op byte, fin bool, payload []byte, n int, err error) {
	if len(b) < 2 {
		return 0, false, nil, 0, nil
	}
	fin = b[0]&0x80 != 0
	op = b[0] & 0x0f
	if b[0]&0x70 != 0 || b[1]&0x80 != 0 {
		return 0, false, nil, 0, errProtocol // RSV bits (no extension negotiated) or a masked server frame
	}
	size, hdr := uint64(b[1]&0x7f), 2
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, false, nil, 0, nil
		}
		size, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, false, nil, 0, nil
		}
		size, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	if size > 1<<24 {
		return 0, false, nil, 0, errProtocol
	}
	if op >= opClose && (!fin || size > 125) {
		return 0, false, nil, 0, errProtocol
	}
	end := hdr + int(size)
	if len(b) < end {
		return 0, false, nil, 0, nil
	}
	return op, fin, b[hdr:end], end, nil
}

// needed reports how many bytes the frame at the front of b occupies, or 0
// if its header is incomplete: the reader grows its buffer to fit.
func needed(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch n := int(b[1] & 0x7f); n {
	case 126:
		if len(b) < 4 {
			return 0
		}
		return 4 + int(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0
		}
		return 10 + int(binary.BigEndian.Uint64(b[2:]))
	default:
		return 2 + n
	}
}

// appendClientFrame appends a final, masked frame, as RFC 6455 requires of
// clients. The mask need not be unpredictable here: no proxy sits between.
func appendClientFrame(dst []byte, op byte, payload []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	key := [4]byte{0x5a, 0x3c, 0xa5, 0xc3}
	dst = append(dst, key[:]...)
	for i, c := range payload {
		dst = append(dst, c^key[i&3])
	}
	return dst
}

// fields extracts the broadcast index and the send time from one
// notification, wherever the peer's envelope puts it:
// …"data":{"i":17,"t":1764000000000000000,…}…
func fields(msg []byte) (i, t int64, ok bool) {
	i, ok = number(msg, `"i":`)
	if !ok {
		return 0, 0, false
	}
	t, ok = number(msg, `"t":`)
	return i, t, ok
}

func number(msg []byte, key string) (int64, bool) {
	k := bytes.Index(msg, []byte(key))
	if k < 0 {
		return 0, false
	}
	var v int64
	digits := 0
	for _, c := range msg[k+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		digits++
	}
	return v, digits > 0
}
