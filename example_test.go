package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wsnotify/notify"
)

// A service mounts the handler and broadcasts after each change; every
// connected client receives the JSON envelope.
func ExampleRegistry_Handler() {
	connected := make(chan struct{})
	reg := notify.New(&notify.Options{OnConnect: func(*notify.Client) { connected <- struct{}{} }})
	defer reg.Close()
	mux := http.NewServeMux()
	mux.Handle("GET /ws", reg.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	<-connected

	reg.Broadcast(ctx, notify.SocketMessage{
		Type: "customer.created",
		Data: map[string]any{"id": 42, "name": "Ada"},
		Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
	})
	_, msg, _ := c.Read(ctx)
	fmt.Println(string(msg))
	// Output: {"seq":1,"type":"customer.created","data":{"id":42,"name":"Ada"},"time":"2026-11-25T12:00:00Z"}
}

// NotifyText sends a string unchanged, as the original pattern's
// NotifyClientsAsync did.
func ExampleRegistry_NotifyText() {
	connected := make(chan struct{})
	reg := notify.New(&notify.Options{OnConnect: func(*notify.Client) { connected <- struct{}{} }})
	defer reg.Close()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	<-connected

	reg.NotifyText(ctx, "Customer 42 was deleted")
	_, msg, _ := c.Read(ctx)
	fmt.Println(string(msg))
	// Output: Customer 42 was deleted
}

// Callers that accept connections themselves (to pick subprotocols, say)
// hand them to Add, which serves them until they end.
func ExampleRegistry_Add() {
	reg := notify.New(nil)
	defer reg.Close()
	added := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		opts, err := notify.ParseQuery(r.URL.Query())
		if err != nil {
			conn.Close(websocket.StatusPolicyViolation, err.Error())
			return
		}
		added <- reg.Add(context.Background(), conn, opts)
	}))
	defer srv.Close()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.URL+"?since=now", nil)
	if err != nil {
		panic(err)
	}
	_, hello, _ := c.Read(ctx) // sent once registered
	fmt.Println(strings.Contains(string(hello), `"type":"notify.hello"`))
	c.Close(websocket.StatusNormalClosure, "done")
	fmt.Println("Add returned:", <-added)
	// Output:
	// true
	// Add returned: <nil>
}

// Stop the Registry beside the http.Server, and wait for both:
// http.Server.Shutdown does not wait for WebSocket connections, which it
// handed over when they were upgraded, so a main that returned after it
// alone (or called Registry.Shutdown from RegisterOnShutdown, which does
// not wait either) would cut the flush short. Here every message broadcast
// before the shutdown reaches the client, then 1001.
func ExampleRegistry_Shutdown() {
	reg := notify.New(nil)
	srv := &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"?since=now", nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	c.Read(ctx) // the hello: registered from here on
	for i := range 100 {
		reg.Broadcast(ctx, notify.SocketMessage{Type: "tick", Data: i})
	}

	received := make(chan string)
	go func() {
		n := 0
		for {
			if _, _, err := c.Read(ctx); err != nil {
				received <- fmt.Sprintf("%d messages, then %v", n, websocket.CloseStatus(err))
				return
			}
			n++
		}
	}()

	// What main does on SIGTERM:
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- reg.Shutdown(stopCtx) }() // flushes, then 1001 to every connection
	if err := srv.Shutdown(stopCtx); err != nil {
		fmt.Println("http:", err)
	}
	if err := <-done; err != nil {
		fmt.Println("notify:", err)
	}

	fmt.Println(<-received)
	// Output: 100 messages, then StatusGoingAway
}

// The REST handoff: the response a page renders from says where its
// snapshot ends, and the page connects from there, so no change falls
// between the two.
func ExamplePosition_SetHeader() {
	reg := notify.New(nil)
	defer reg.Close()
	var mu sync.Mutex
	var customers []string // the application's state
	save := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		customers = append(customers, name)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", reg.Handler())
	mux.HandleFunc("GET /api/customers", func(w http.ResponseWriter, r *http.Request) {
		pos := reg.Position() // before reading the state
		mu.Lock()
		list := strings.Join(customers, ",")
		mu.Unlock()
		pos.SetHeader(w.Header())
		fmt.Fprint(w, list)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	save("Ada")
	reg.Broadcast(ctx, notify.SocketMessage{Type: "customer.created", Data: "Ada"})

	res, err := http.Get(srv.URL + "/api/customers")
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	seq, epoch := res.Header.Get(notify.HeaderSeq), res.Header.Get(notify.HeaderEpoch)
	fmt.Println("snapshot at seq", seq)

	// A change saved after the snapshot was read, before the page connects:
	save("Grace")
	reg.Broadcast(ctx, notify.SocketMessage{Type: "customer.created", Data: "Grace"})

	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws?since=" + seq + "&epoch=" + epoch
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	for range 2 { // the hello, then what the snapshot missed
		_, msg, _ := c.Read(ctx)
		var m struct {
			Seq  uint64
			Type string
			Data any
		}
		json.Unmarshal(msg, &m)
		fmt.Println(m.Seq, m.Type, m.Data != nil)
	}
	// Output:
	// snapshot at seq 1
	// 0 notify.hello true
	// 2 customer.created true
}

// tokenKey signs the example's access tokens. A real service shares it
// with whatever issues tokens (or verifies JWTs with a library instead).
var tokenKey = []byte("example key: use 32 random bytes")

// signToken issues "user.expiry.signature", expiry in Unix milliseconds.
func signToken(user string, expires time.Time) string {
	payload := user + "." + strconv.FormatInt(expires.UnixMilli(), 10)
	mac := hmac.New(sha256.New, tokenKey)
	mac.Write([]byte(payload))
	return payload + "." + hex.EncodeToString(mac.Sum(nil))
}

// verifyToken checks a token from signToken and returns its user and
// expiry; it does not check the expiry itself: the Registry does.
func verifyToken(token string) (notify.Identity, error) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return notify.Identity{}, errors.New("malformed token")
	}
	mac := hmac.New(sha256.New, tokenKey)
	mac.Write([]byte(token[:i]))
	if sig, err := hex.DecodeString(token[i+1:]); err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return notify.Identity{}, errors.New("bad token")
	}
	user, ms, _ := strings.Cut(token[:i], ".")
	exp, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return notify.Identity{}, errors.New("malformed token")
	}
	return notify.Identity{User: user, Expires: time.UnixMilli(exp)}, nil
}

// Single-page apps that authenticate with bearer tokens pass them in the
// access_token query parameter (notify.js's token option does, before
// every connection): browsers let a script set no header on a WebSocket or
// an EventSource. Authorize reads it and returns the token's expiry as the
// Identity's: the Registry refuses a token that has expired with 401, and
// closes a connection whose token expires with 1008 "notify: authorisation
// expired", upon which notify.js asks for a fresh token and resumes, losing
// nothing. A probe (see ProbeParam) is how notify.js tells a refused token
// from a network failure. Query strings are never logged by the Registry,
// but proxies' access logs may record them: use short-lived tokens.
func ExampleOptions_authorize() {
	reg := notify.New(&notify.Options{
		PingInterval: time.Second, // expiry is checked at each heartbeat tick, a quarter of this
		Authorize: func(r *http.Request) (notify.Identity, error) {
			return verifyToken(r.URL.Query().Get("access_token"))
		},
	})
	defer reg.Close()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	probe := func(token string) int {
		resp, err := http.Get(srv.URL + "?probe=1&access_token=" + url.QueryEscape(token))
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	fmt.Println("probe with an expired token:", probe(signToken("ada", time.Now().Add(-time.Minute))))
	fmt.Println("probe with a forged token:", probe(signToken("ada", time.Now().Add(time.Minute))+"0"))

	ctx := context.Background()
	token := signToken("ada", time.Now().Add(time.Second))
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"?since=now&access_token="+url.QueryEscape(token), nil)
	if err != nil {
		panic(err)
	}
	defer c.CloseNow()
	_, hello, _ := c.Read(ctx)
	fmt.Println(strings.Contains(string(hello), "notify.hello"))
	_, _, err = c.Read(ctx) // until the token expires
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		fmt.Println("closed:", int(ce.Code), ce.Reason)
	}
	fmt.Println("probe with a fresh token:", probe(signToken("ada", time.Now().Add(time.Minute))))
	// Output:
	// probe with an expired token: 401
	// probe with a forged token: 401
	// true
	// closed: 1008 notify: authorisation expired
	// probe with a fresh token: 204
}

// logBroker is a minimal Broker that keeps the whole contract: one
// process, a bounded history, delivery in seq order. It is what
// MemoryBroker does, without the age bound and the faster History.
type logBroker struct {
	mu    sync.Mutex
	epoch string                 // a real broker picks a fresh random one whenever history is lost
	max   int                    // the most messages retained
	log   []notify.BrokerMessage // the retained regular messages, oldest first, consecutive seqs
	seq   uint64                 // the last seq given
	subs  map[*func(notify.BrokerMessage)]struct{}
}

// Publish numbers, retains and delivers under one lock, so every subscriber
// gets every message once, in seq order, one call at a time. That is safe
// because the Registry's deliver function never blocks.
func (b *logBroker) Publish(ctx context.Context, m notify.BrokerMessage) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m.Seq, m.Epoch = 0, b.epoch // a raw message (NotifyText) has no seq and is not retained
	if !m.Raw {
		b.seq++
		m.Seq = b.seq
		b.log = append(b.log, m)
		if len(b.log) > b.max {
			b.log = b.log[1:]
		}
	}
	for deliver := range b.subs {
		(*deliver)(m)
	}
	return m.Seq, nil
}

// Subscribe returns the position just before the first message it will
// deliver; after cancel returns, deliver is not called again.
func (b *logBroker) Subscribe(ctx context.Context, deliver func(notify.BrokerMessage)) (notify.Position, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := &deliver
	b.subs[key] = struct{}{}
	cancel := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, key)
	}
	return notify.Position{Epoch: b.epoch, Seq: b.seq}, cancel, nil
}

// History returns what is retained of (after, upto], and says when part of
// it is not retained any more.
func (b *logBroker) History(ctx context.Context, after, upto uint64) ([]notify.BrokerMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []notify.BrokerMessage
	for _, m := range b.log {
		if m.Seq > after && m.Seq <= upto {
			out = append(out, m)
		}
	}
	if upto > after && (len(b.log) == 0 || b.log[0].Seq > after+1) {
		return out, fmt.Errorf("logBroker: messages after %d: %w", after, notify.ErrHistoryGap)
	}
	return out, nil
}

// Head reports the last seq given, delivered or not.
func (b *logBroker) Head(ctx context.Context) (notify.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return notify.Position{Epoch: b.epoch, Seq: b.seq}, nil
}

// A Broker carries messages from Broadcast to the connections, numbers them
// and keeps the history resuming clients replay; see the contract on
// Broker. Here a minimal one retains two messages: after three broadcasts,
// a client that resumes from seq 0 gets a notify.gap (seq 1 is gone) and
// one that resumes from seq 2 gets the third message.
func ExampleBroker() {
	b := &logBroker{epoch: "e1", max: 2, subs: map[*func(notify.BrokerMessage)]struct{}{}}
	reg := notify.New(&notify.Options{Broker: b})
	defer reg.Close()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()

	ctx := context.Background()
	for _, name := range []string{"Ada", "Grace", "Edsger"} {
		reg.Broadcast(ctx, notify.SocketMessage{Type: "customer.created", Data: name})
	}
	for _, since := range []string{"0", "2"} {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"?since="+since+"&epoch=e1", nil)
		if err != nil {
			panic(err)
		}
		for range 2 { // the hello, then the gap or the replay
			_, msg, _ := c.Read(ctx)
			var m struct {
				Seq  uint64
				Type string
				Data any
			}
			json.Unmarshal(msg, &m)
			fmt.Printf("since=%s: %d %s %v\n", since, m.Seq, m.Type, m.Data)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	// Output:
	// since=0: 0 notify.hello map[epoch:e1 seq:3]
	// since=0: 0 notify.gap map[epoch:e1 reason:expired seq:3 since:0]
	// since=2: 0 notify.hello map[epoch:e1 seq:3]
	// since=2: 3 customer.created Edsger
}
