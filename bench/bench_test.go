package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The harness re-executes its binary as a server; under go test that
	// binary is the test binary.
	if name := os.Getenv(serveEnv); name != "" {
		if err := serverMain(name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serverFrame builds an unmasked frame as a server sends it.
func serverFrame(b0 byte, payload []byte) []byte {
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, byte(n))
	case n < 1<<16:
		out = append(out, 126, byte(n>>8), byte(n))
	default:
		out = append(out, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, payload...)
}

func TestParseFrame(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 1000, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte{'x'}, size)
		f := serverFrame(0x81, payload)
		if got := needed(f[:min(len(f), 10)]); got != len(f) {
			t.Errorf("size %d: needed = %d, want %d", size, got, len(f))
		}
		// Every strict prefix is incomplete, never an error.
		for _, cut := range []int{0, 1, 2, 3, len(f) - 1} {
			if cut < 0 || cut >= len(f) {
				continue
			}
			if _, _, _, n, err := parseFrame(f[:cut]); n != 0 || err != nil {
				t.Fatalf("size %d, prefix %d: n=%d err=%v", size, cut, n, err)
			}
		}
		op, fin, p, n, err := parseFrame(append(f, 0x89, 0))
		if err != nil || op != opText || !fin || n != len(f) || !bytes.Equal(p, payload) {
			t.Fatalf("size %d: op=%d fin=%v len=%d n=%d err=%v", size, op, fin, len(p), n, err)
		}
	}
	bad := [][]byte{
		{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}, // masked server frame
		{0xc1, 0x00},            // RSV1 without an extension
		{0x09, 0x00},            // fragmented control frame
		{0x89, 126, 0x00, 0x80}, // control frame over 125 bytes
	}
	for _, b := range bad {
		if _, _, _, _, err := parseFrame(b); err == nil {
			t.Errorf("% x: no error", b)
		}
	}
}

func TestClientFrameRoundTrip(t *testing.T) {
	payload := []byte(`{"id":1,"connect":{}}`)
	f := appendClientFrame(nil, opText, payload)
	if f[0] != 0x81 || f[1] != 0x80|byte(len(payload)) {
		t.Fatalf("header % x", f[:2])
	}
	key, body := f[2:6], f[6:]
	for i := range body {
		body[i] ^= key[i&3]
	}
	if !bytes.Equal(body, payload) {
		t.Fatalf("unmasked %q", body)
	}
}

func TestFields(t *testing.T) {
	notify := []byte(`{"seq":18,"type":"bench","data":{"i":17,"t":1764000000000000001,"p":"xx"},"time":"2026-01-01T00:00:00Z"}`)
	centrifuge := []byte(`{"push":{"channel":"bench","pub":{"data":` + string(notify) + `}}}`)
	for _, m := range [][]byte{notify, centrifuge} {
		i, ts, ok := fields(m)
		if !ok || i != 17 || ts != 1764000000000000001 {
			t.Errorf("fields(%s) = %d, %d, %v", m, i, ts, ok)
		}
	}
	if _, _, ok := fields([]byte(`{}`)); ok {
		t.Error("fields({}) ok")
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	s := summarize(&h)
	near := func(got, want time.Duration) bool { return got >= want && got <= want+want/50 }
	if s.N != 1000 || !near(s.P50, 500*time.Microsecond) || !near(s.P99, 990*time.Microsecond) || s.Max != time.Millisecond {
		t.Fatalf("summary %+v", s)
	}
	for v := int64(0); v < 1<<20; v = v*5/4 + 1 {
		if b := bucketOf(v); bucketHigh(b) < v || (b > 0 && bucketHigh(b-1) >= v) {
			t.Fatalf("value %d in bucket %d (high %d)", v, b, bucketHigh(b))
		}
	}
}

// TestQuickScenarios runs a tiny version of each process kind against
// notify and one peer with framing of its own, end to end: fresh server
// processes, the load generator, the checks.
func TestQuickScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	cfg := quickConfig()
	cfg.small, cfg.large, cfg.stallConns = 20, 40, 100
	cfg.measure, cfg.smallDur, cfg.largeDur, cfg.stallDur = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	cfg.contenders = []string{"notify", "notify-sse", "centrifuge", "centrifuge-sse"}
	var results []result
	for _, c := range cfg.contenders {
		for _, kind := range []string{"small", "large", "stall"} {
			results = append(results, runKind(&cfg, kind, c, 1)...)
		}
	}
	rep := newReport(&cfg, machineInfo(nil), results)
	if f := rep.failures(); len(f) > 0 {
		t.Fatalf("failures:\n%s", strings.Join(f, "\n"))
	}
	for _, c := range cfg.contenders {
		for _, key := range [][2]string{{"fanout-20", "dps"}, {"latency-40", "p99_ms"}, {"idle-40", "rss_kb"}, {"stall-100", "p99_ms"}} {
			if _, ok := rep.get(key[0], c, key[1]); !ok {
				t.Errorf("%s: no %s in %s", c, key[1], key[0])
			}
		}
		if s, _ := rep.get("fanout-20", c, "lost"); s.med != 0 {
			t.Errorf("%s lost %v notifications in the fan-out", c, s.med)
		}
	}
	if md := rep.markdown(); !strings.Contains(md, "| notify |") {
		t.Errorf("no notify row in\n%s", md)
	}
	if svg := rep.svg(); !strings.HasPrefix(svg, "<svg") {
		t.Errorf("svg: %.40s", svg)
	}
}

// TestStreamParser feeds the load generator's SSE reader a chunked event
// stream cut at every size from 1 byte up: every notification is counted
// once, in order, whatever the cuts, and the end of the response ends the
// connection.
func TestStreamParser(t *testing.T) {
	var body strings.Builder
	body.WriteString("\r\nretry: 2000\n\nid: 0:e\nevent: notify.hello\ndata: {\"type\":\"notify.hello\",\"data\":{\"epoch\":\"e\",\"seq\":0}}\n\n")
	const n = 50
	for i := range n {
		fmt.Fprintf(&body, "id: %d:e\nevent: bench\ndata: {\"seq\":%d,\"type\":\"bench\",\"data\":{\"i\":%d,\"t\":1}}\n\n", i+1, i+1, i)
		if i%7 == 0 {
			body.WriteString(": ping\n\n")
		}
		if i%11 == 0 {
			fmt.Fprintf(&body, "data: {\"push\":{\"pub\":{\"data\":\r\ndata: {\"i\":%d,\"t\":1}}}}\r\n\r\n", i) // two data lines, CRLF
		}
	}
	// Chunks of assorted sizes, as a server's flushes make them.
	var raw []byte
	text := body.String()
	for k := 1; len(text) > 0; k = k*3%97 + 1 {
		c := min(k, len(text))
		raw = fmt.Appendf(raw, "%x\r\n%s\r\n", c, text[:c])
		text = text[c:]
	}
	raw = append(raw, "0\r\n\r\n"...)

	for cut := 1; cut <= 64; cut++ {
		lg := &loadgen{name: "notify-sse", peer: peers["notify-sse"]}
		w := &worker{lg: lg, byFd: map[int32]*wsConn{}}
		c := &wsConn{lg: lg, buf: make([]byte, 16)}
		for rest := raw; len(rest) > 0 && !c.closed.Load(); {
			k := min(cut, len(rest))
			if c.w+k > len(c.buf) {
				c.buf = append(c.buf[:c.w], make([]byte, k)...)
			}
			c.w += copy(c.buf[c.w:], rest[:k])
			rest = rest[k:]
			w.process(c, time.Now())
		}
		// The i%11 events repeat an index already seen: counted as reordered.
		if got, next, missing := c.got.Load(), c.next.Load(), c.missing.Load(); got != n || next != n || missing != 0 || c.reordered.Load() != (n+10)/11 {
			t.Fatalf("cut %d: got %d, next %d, missing %d, reordered %d", cut, got, next, missing, c.reordered.Load())
		}
		if !c.closed.Load() {
			t.Fatalf("cut %d: the end of the response did not end the connection", cut)
		}
	}
}

// TestReadTCP checks the sock_diag dump against a connection of its own:
// both ends found, unread bytes counted, a closed end no longer ESTABLISHED.
func TestReadTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cl, sl := client.LocalAddr().(*net.TCPAddr), server.LocalAddr().(*net.TCPAddr)
	srvKey, cliKey := makeKey(sl, cl), makeKey(cl, sl)
	want := map[tcpKey]bool{srvKey: true, cliKey: true}
	deadline := time.Now().Add(5 * time.Second)
	for {
		socks, err := readTCP(want)
		if err != nil {
			t.Fatal(err)
		}
		s, c := socks[srvKey], socks[cliKey]
		if s.established() && c.established() && c.rxQ == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %+v, client %+v", s, c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	server.Close()
	for {
		socks, err := readTCP(want)
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := socks[srvKey]; !ok || !s.established() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("closed server end still ESTABLISHED")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestart runs the restart measurement with a few clients under both
// rules: every client must resume on the new server, whose accepted
// upgrades are counted. The figures are logged, not judged.
func TestRestart(t *testing.T) {
	for _, rule := range []string{"jitter", "spread"} {
		r, err := measureRestart(rule, 20, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if r.NotResumed != 0 || r.Peak == 0 {
			t.Errorf("%s: %d of 20 clients did not resume, peak %d/s", rule, r.NotResumed, r.Peak)
		}
		t.Logf("%+v", r)
	}
}

func TestPeakPerSecond(t *testing.T) {
	t0 := time.Now()
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	for _, tc := range []struct {
		times []time.Time
		want  int
	}{
		{nil, 0},
		{at(0), 1},
		{at(0, 999, 1000, 1500, 1999), 3}, // 999 and 1999 are a whole second apart
		{at(0, 1000, 2000), 1},
	} {
		if got := peakPerSecond(tc.times); got != tc.want {
			t.Errorf("peakPerSecond(%v) = %d, want %d", tc.times, got, tc.want)
		}
	}
}
