package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify/pgbroker/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The demo on a real PostgreSQL: two servers share the database; changes
// made through one reach a page connected to the other, in order, each
// announced in its own transaction; the list carries the stream position.
func TestDemoOnPostgres(t *testing.T) {
	s := pgtest.Start(t)
	ctx, stop := context.WithCancel(context.Background())
	a, aDone := start(t, ctx, s.ConnString())
	b, bDone := start(t, ctx, s.ConnString())
	defer func() {
		stop()
		for _, done := range []chan error{aDone, bDone} {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}()

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, "ws://"+b+"/ws?since=now", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	readFrame(t, ws) // notify.hello: registered

	send(t, "POST", "http://"+a+"/api/customers", `{"name":"Ada Lovelace","email":"ada@example.com"}`, http.StatusCreated)
	send(t, "PUT", "http://"+a+"/api/customers/1", `{"name":"Ada King","email":"ada@example.com"}`, http.StatusOK)
	send(t, "POST", "http://"+a+"/api/customers", `{"name":"","email":"x"}`, http.StatusBadRequest)
	send(t, "DELETE", "http://"+a+"/api/customers/1", "", http.StatusOK)
	send(t, "DELETE", "http://"+a+"/api/customers/1", "", http.StatusNotFound) // nothing to commit, nothing sent

	var got []string
	for range 3 {
		var f struct {
			Seq  uint64
			Type string
			Data struct{ Name string }
		}
		if err := json.Unmarshal(readFrame(t, ws), &f); err != nil {
			t.Fatal(err)
		}
		got = append(got, f.Type+" "+f.Data.Name+" "+string(rune('0'+f.Seq)))
	}
	want := []string{"customer.created Ada Lovelace 1", "customer.updated Ada King 2", "customer.deleted Ada King 3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("page on the other server received (-want +got):\n%s", diff)
	}
	resp := send(t, "GET", "http://"+b+"/api/customers", "", http.StatusOK)
	if resp.Header.Get("Notify-Seq") != "3" || resp.Header.Get("Notify-Epoch") == "" {
		t.Errorf("list headers %v, want Notify-Seq 3 and an epoch", resp.Header)
	}
}

// start runs the demo on a free port and returns its address.
func start(t *testing.T, ctx context.Context, db string) (string, chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, "127.0.0.1:0", db, pw)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("demo did not start: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "customers demo on PostgreSQL, http://"), "/"), done
}

func send(t *testing.T, method, url, body string, want int) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", method, url, resp.StatusCode, want)
	}
	return resp
}

func readFrame(t *testing.T, ws *websocket.Conn) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
