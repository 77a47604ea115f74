package e2e_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	gocmp "github.com/google/go-cmp/cmp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
)

// TestCustomersResumeAfterDrop opens the customers demo in Chromium,
// changes customers over HTTP while the page watches, cuts the page's
// connection, makes more changes while it is away (creations, an update, a
// deletion, and a customer created and deleted within the outage), lets it
// reconnect, and checks that the page shows exactly the server's
// customers, each once.
//
// With the default history the page must catch up by resuming (hello, then
// the replay) without reloading its list; with a history shorter than the
// outage the server answers with notify.gap ("expired") and the page must
// reload. Either way it ends in the same state.
//
// Each case runs over WebSocket, and over SSE with the demo refusing
// WebSocket upgrades (its -no-websocket flag): the page's notify.js must
// fall back at once and show every change live all the same.
func TestCustomersResumeAfterDrop(t *testing.T) {
	chromium(t) // skip or fail here rather than in each case
	for _, tc := range []struct {
		name    string
		history int // MemoryBroker.HistoryLength; 0 for the default
		gap     string
	}{
		{name: "replayed from history"},
		{name: "history too short, reloaded", history: 2, gap: "expired"},
	} {
		for _, tr := range transports {
			t.Run(tc.name+"/"+tr, func(t *testing.T) {
				testCustomersResumeAfterDrop(t, tr, tc.history, tc.gap)
			})
		}
	}
}

// demoSite is the demo's site over reg and store, refusing WebSocket
// upgrades when transport is "sse", as the demo's -no-websocket flag does.
func demoSite(transport string, reg *notify.Registry, store app.Store) http.Handler {
	if transport == "sse" {
		return app.RefuseUpgrades(app.New(reg, store))
	}
	return app.New(reg, store)
}

// checkTransport checks that the page used the transport it was meant to,
// and says so in #transport: WebSocket only, or, with upgrades refused, one
// refused WebSocket and then SSE alone (the choice kept for the page's
// life).
func checkTransport(t *testing.T, b *browser, transport string) {
	t.Helper()
	s := b.socketsNow()
	var bad bool
	for i, kind := range s.Kinds {
		first := i == 0
		switch {
		case transport == "websocket" && kind != "ws",
			transport == "sse" && first && kind != "ws",
			transport == "sse" && !first && kind != "sse":
			bad = true
		}
	}
	if transport == "sse" && (len(s.Handshakes) == 0 || s.Handshakes[0] != http.StatusForbidden) {
		bad = true
	}
	if bad {
		t.Errorf("over %s the page tried connections %v, answered %v", transport, s.Kinds, s.Handshakes)
	}
	want := map[string]string{"websocket": "(WebSocket)", "sse": "(Server-Sent Events)"}[transport]
	if got := eval[string](b, `document.getElementById("transport").textContent`); got != want {
		t.Errorf("the page shows its transport as %q, want %q", got, want)
	}
}

func testCustomersResumeAfterDrop(t *testing.T, transport string, history int, gap string) {
	store := app.NewMemoryStore()
	reg := notify.New(&notify.Options{
		Broker: notify.NewMemoryBroker(&notify.MemoryBrokerOptions{HistoryLength: history}),
	})
	t.Cleanup(func() { reg.Close() })
	site, lists := countLists(demoSite(transport, reg, store))
	srv := httptest.NewServer(site)
	t.Cleanup(srv.Close)
	px := newProxy(t, srv.Listener.Addr().String())
	api := newCustomersAPI(t, srv)

	ada := api.create("Ada Lovelace") // before the page: it comes from the list
	listed := reg.Position().Seq
	b := newBrowser(t)
	b.navigate(px.url())
	b.waitFor(`#state is "open"`, stateIs("open"))
	b.waitRow(ada)
	checkControls(t, b, true)

	grace := api.create("Grace Hopper") // live
	linus := api.create("Linus Torvalds")
	b.waitRow(grace)
	b.waitRow(linus)

	// The page's own form: the POST goes through the proxy, and the
	// row appears when the notification does.
	run(b, "adding a customer with the form", chromedp.Steps(
		chromedp.SendKeys(chromedp.CSS("#name"), "Margaret Hamilton"),
		chromedp.SendKeys(chromedp.CSS("#email"), "margaret@example.com"),
		chromedp.Click(chromedp.CSS("#add")),
	))
	b.waitFor("a row for Margaret Hamilton", `[...document.querySelectorAll("#customers td.name")].some((td) => td.textContent === "Margaret Hamilton")`)
	api.adopt(store, "Margaret Hamilton")
	b.waitFor("the form to be reset", `document.getElementById("name").value === ""`)
	// And its Delete button.
	run(b, "deleting a customer with its button", chromedp.Click(
		chromedp.CSS(fmt.Sprintf(`#customers [data-id="%d"] button.delete`, linus.ID))))
	b.waitFor("Linus's row to go", fmt.Sprintf(`document.querySelector('#customers [data-id="%d"]') === null`, linus.ID))
	delete(api.model, linus.ID)

	b.note("test: stop the proxy")
	created := b.socketsNow().Created
	before := reg.Position().Seq // the page has seen every change so far
	px.stop()
	b.waitFor(`#state leaves "open"`, "!("+stateIs("open")+")")
	checkControls(t, b, false)

	b.note("test: changes while the page is away")
	api.create("Barbara Liskov")
	api.update(ada.ID, "Ada <b>King</b>") // shown as text, never as markup
	api.remove(grace.ID)
	ghost := api.create("Short Lived")
	api.remove(ghost.ID)
	api.create("Ken Thompson")
	// Wait for a new connection to be refused, so the page has
	// been through its retry path, not just lucky.
	b.waitSockets("a refused reconnection attempt", func(s sockets) bool {
		return s.Created > created && s.Closed >= s.Created
	})

	away := reg.Position().Seq

	b.note("test: restart the proxy")
	px.start()
	b.waitFor(`#state is "open" again`, stateIs("open"))
	// The log tells of the resume once the replay has arrived; with a
	// short history it tells of the gap, then of the reload.
	via := map[string]string{"websocket": "WS", "sse": "SSE"}[transport]
	reconnected := []liveLogEntry{{Kind: "resume", Text: fmt.Sprintf("resumed after seq %d, %d replayed", before, away-before), Via: via}}
	if gap != "" {
		reconnected = []liveLogEntry{
			{Kind: "gap", Text: fmt.Sprintf("gap after seq %d: the page was away longer than the server's history; reloading the list", before), Via: via},
			{Kind: "reload", Text: fmt.Sprintf("list reloaded at seq %d: %d customers, 0 held messages applied", away, len(api.model)), Via: via},
		}
	}
	last := reconnected[len(reconnected)-1]
	b.waitFor("the log to show "+last.Text, logShows(last.Kind, last.Text))
	api.checkPage(b, store)
	checkControls(t, b, true)
	checkLog(t, b, via, listed, before, away, reconnected)

	if n := eval[int](b, `document.querySelectorAll("#customers b").length`); n != 0 {
		t.Errorf("a customer's name was rendered as HTML: %d <b> elements in the list", n)
	}

	frames := parseFrames(t, b.socketsNow().Frames)
	gaps := ofType(frames, notify.TypeGap)
	hellos := ofType(frames, notify.TypeHello)
	if len(hellos) != 2 {
		t.Errorf("the page received %d notify.hello messages, want 2 (first connection and resume)", len(hellos))
	}
	checkTransport(t, b, transport)
	if gap == "" {
		if len(gaps) != 0 || lists.Load() != 1 {
			t.Errorf("with the outage within history, the page got %d notify.gap and loaded the list %d times; want it to resume by replay: 0 gaps, 1 load", len(gaps), lists.Load())
		}
		return
	}
	if len(gaps) != 1 || gapReason(t, gaps[0]) != gap {
		t.Errorf("the page got notify.gap messages %v; want one with reason %q", gaps, gap)
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("the page loaded the list %d times, want 2: at start, and once after the gap", n)
	}
}

// checkControls checks that the page's edit controls (the form and every
// row's buttons) are enabled exactly when open, and that #offline says so
// when they are not.
func checkControls(t *testing.T, b *browser, open bool) {
	t.Helper()
	type controls struct {
		Enabled, Disabled int
		Offline           string
	}
	got := eval[controls](b, `(() => {
		const els = [...document.querySelectorAll("#form input, #form button, #customers button")];
		const offline = document.getElementById("offline");
		return {
			enabled: els.filter((el) => !el.disabled).length,
			disabled: els.filter((el) => el.disabled).length,
			offline: offline.hidden ? "" : offline.textContent,
		};
	})()`)
	rows := eval[int](b, `document.querySelectorAll("#customers tr").length`)
	want := controls{Enabled: 3 + 2*rows}
	if !open {
		want = controls{Disabled: 3 + 2*rows, Offline: "Not connected: editing is paused until live updates are back."}
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("the edit controls with the stream open=%t (-want +got):\n%s", open, diff)
	}
}

// liveLogEntry is one entry of the page's live log, as the tests read it.
type liveLogEntry struct {
	Kind     string `json:"kind"` // data-kind: message, connect, resume, lost, gap, reload
	Seq      uint64 `json:"seq"`  // a message's seq
	Text     string `json:"text"` // without the time
	Via      string `json:"via"`  // WS or SSE
	Replayed bool   `json:"replayed"`
}

// logJS reads the live log, oldest entry first.
const logJS = `[...document.querySelectorAll("#log li")].reverse().map((li) => ({
	kind: li.dataset.kind,
	seq: Number(li.dataset.seq ?? 0),
	text: li.querySelector(".what").textContent,
	via: li.querySelector(".via").textContent,
	replayed: li.classList.contains("replayed"),
}))`

// logShows is a JavaScript condition: the newest entry of this kind in
// the log reads text.
func logShows(kind, text string) string {
	return fmt.Sprintf(`document.querySelector('#log li[data-kind=%q] .what')?.textContent === %s`, kind, jsString(text))
}

// checkLog compares the page's whole live log with what the stream did:
// the first connection after the list's seq (listed); each notification
// the server sent (read from the frames the browser received) once, in
// order, with its seq, type and the customer's name; the connection lost
// after seq before; the reconnection's entries; and the messages after
// it, those up to seq away marked as replayed.
func checkLog(t *testing.T, b *browser, via string, listed, before, away uint64, reconnected []liveLogEntry) {
	t.Helper()
	want := []liveLogEntry{{Kind: "connect", Text: fmt.Sprintf("connected after seq %d, 0 replayed", listed), Via: via}}
	lost := false
	for _, f := range parseFrames(t, b.socketsNow().Frames) {
		if f.Seq == 0 {
			continue
		}
		if f.Seq > before && !lost {
			lost = true
			want = append(want, liveLogEntry{Kind: "lost", Text: "connection lost; reconnecting…", Via: via})
			want = append(want, reconnected...)
		}
		var c app.Customer
		if err := json.Unmarshal(f.Data, &c); err != nil {
			t.Fatalf("%s: %v", f.Raw, err)
		}
		want = append(want, liveLogEntry{Kind: "message", Seq: f.Seq, Text: fmt.Sprintf("#%d %s %s", f.Seq, f.Type, c.Name), Via: via, Replayed: f.Seq > before && f.Seq <= away})
	}
	if diff := gocmp.Diff(want, eval[[]liveLogEntry](b, logJS)); diff != "" {
		t.Errorf("the page's live log (-want +got):\n%s", diff)
	}
}

// TestCustomersServerRestart serves the page from one server process, then
// "restarts" it behind the same address: the old Registry shuts down (the
// page is told 1001, going away), the old server stops listening, changes
// are made on a new server with a new Registry (a new epoch) over the same
// store, and the proxy is pointed at it. The page must reconnect, be told
// notify.gap (reason "epoch", with the new epoch), reload its list from the
// new server and show exactly the right customers.
//
// The reload is held between the server's snapshot and its answer while
// more changes are made: they reach the page over the socket during the
// reload, are missing from the list it then receives, and must be applied
// on top of it.
//
// It runs over WebSocket, and over SSE with the demo refusing WebSocket
// upgrades; there the shutdown reaches the page as a notify.close (1001).
func TestCustomersServerRestart(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testCustomersServerRestart(t, tr) })
	}
}

func testCustomersServerRestart(t *testing.T, transport string) {
	store := app.NewMemoryStore()
	reg1 := notify.New(nil)
	t.Cleanup(func() { reg1.Close() })
	srv1 := httptest.NewServer(demoSite(transport, reg1, store))
	t.Cleanup(srv1.Close)
	px := newProxy(t, srv1.Listener.Addr().String())
	api := newCustomersAPI(t, srv1)

	ada := api.create("Ada Lovelace")
	b := newBrowser(t)
	b.navigate(px.url())
	b.waitFor(`#state is "open"`, stateIs("open"))
	b.waitRow(ada)
	grace := api.create("Grace Hopper")
	b.waitRow(grace)

	b.note("test: shut the first server down")
	created := b.socketsNow().Created
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reg1.Shutdown(ctx); err != nil {
		t.Fatalf("reg1.Shutdown: %v", err)
	}
	srv1.Close()
	b.waitFor(`#state leaves "open"`, "!("+stateIs("open")+")")

	b.note("test: start the second server; changes while the page is away")
	reg2 := notify.New(nil)
	t.Cleanup(func() { reg2.Close() })
	hold := holdList(demoSite(transport, reg2, store))
	site2, lists2 := countLists(hold)
	srv2 := httptest.NewServer(site2)
	t.Cleanup(srv2.Close)
	t.Cleanup(hold.free) // before srv2.Close, which waits for the held request
	api.srv = srv2
	barbara := api.create("Barbara Liskov")
	api.update(ada.ID, "Ada King")
	api.remove(grace.ID)
	ken := api.create("Ken Thompson")
	b.waitSockets("a failed reconnection attempt", func(s sockets) bool {
		return s.Created > created && s.Closed >= s.Created
	})

	b.note("test: the second server takes over the address")
	px.setBackend(srv2.Listener.Addr().String())
	hold.wait(t)
	b.note("test: changes during the page's reload")
	api.create("Dennis Ritchie")
	api.update(barbara.ID, "Barbara Liskov-Turing")
	api.remove(ken.ID)
	ghost := api.create("Short Lived")
	api.remove(ghost.ID)
	last := reg2.Position().Seq // the test is the only writer
	b.waitSockets("the last change to reach the page", func(s sockets) bool {
		return slices.ContainsFunc(s.Frames, func(f string) bool {
			return strings.HasPrefix(f, fmt.Sprintf(`{"seq":%d,`, last))
		})
	})
	hold.free()

	b.waitFor(`#state is "open" again`, stateIs("open"))
	api.checkPage(b, store)

	gaps := ofType(parseFrames(t, b.socketsNow().Frames), notify.TypeGap)
	if len(gaps) != 1 {
		t.Fatalf("the page got %d notify.gap messages, want 1: %v", len(gaps), gaps)
	}
	var info struct{ Reason, Epoch string }
	if err := json.Unmarshal(gaps[0].Data, &info); err != nil {
		t.Fatalf("notify.gap data %s: %v", gaps[0].Data, err)
	}
	if want := reg2.Position().Epoch; info.Reason != "epoch" || info.Epoch != want {
		t.Errorf("notify.gap said reason %q, epoch %q; want reason \"epoch\", epoch %q (the new server's)", info.Reason, info.Epoch, want)
	}
	if n := lists2.Load(); n != 1 {
		t.Errorf("the page loaded the list from the new server %d times, want once (after the gap)", n)
	}
	checkTransport(t, b, transport)
	if transport == "sse" {
		closes := ofType(parseFrames(t, b.socketsNow().Frames), "notify.close")
		if len(closes) != 1 || !strings.Contains(string(closes[0].Data), `"code":1001`) {
			t.Errorf("the page got notify.close events %v; want one, with code 1001", closes)
		}
	}
}

// listHold wraps the demo's handler. The first GET /api/customers it
// serves takes its snapshot (the position, then the list) at once but is
// answered only when the test calls free.
type listHold struct {
	h        http.Handler
	taken    chan struct{} // receives once the held snapshot is taken
	released chan struct{}
	once     sync.Once
	held     atomic.Bool
}

func holdList(h http.Handler) *listHold {
	return &listHold{h: h, taken: make(chan struct{}, 1), released: make(chan struct{})}
}

func (l *listHold) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/api/customers" || l.held.Swap(true) {
		l.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	l.h.ServeHTTP(rec, r)
	l.taken <- struct{}{}
	select {
	case <-l.released:
	case <-r.Context().Done():
		return
	}
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// wait waits until the held request has taken its snapshot.
func (l *listHold) wait(t *testing.T) {
	t.Helper()
	select {
	case <-l.taken:
	case <-time.After(stepTimeout):
		t.Fatal("timed out waiting for the page to reload its list")
	}
}

// free lets the held request answer. It is idempotent.
func (l *listHold) free() { l.once.Do(func() { close(l.released) }) }

// customersAPI drives the demo's REST API on a backend directly, never
// through the proxy, so it works while the page is cut off, and keeps the
// state the page must end up showing.
type customersAPI struct {
	t     *testing.T
	srv   *httptest.Server
	model map[int64]app.Customer
}

func newCustomersAPI(t *testing.T, srv *httptest.Server) *customersAPI {
	return &customersAPI{t: t, srv: srv, model: map[int64]app.Customer{}}
}

func (a *customersAPI) create(name string) app.Customer {
	a.t.Helper()
	c := a.call(http.MethodPost, "/api/customers", http.StatusCreated, emailFor(name), name)
	a.model[c.ID] = c
	return c
}

// createWith creates a customer with this email, not the one emailFor
// makes up.
func (a *customersAPI) createWith(name, email string) app.Customer {
	a.t.Helper()
	c := a.call(http.MethodPost, "/api/customers", http.StatusCreated, email, name)
	a.model[c.ID] = c
	return c
}

func (a *customersAPI) update(id int64, name string) app.Customer {
	a.t.Helper()
	c := a.call(http.MethodPut, fmt.Sprintf("/api/customers/%d", id), http.StatusOK, emailFor(name), name)
	a.model[c.ID] = c
	return c
}

func (a *customersAPI) remove(id int64) {
	a.t.Helper()
	a.call(http.MethodDelete, fmt.Sprintf("/api/customers/%d", id), http.StatusOK, "", "")
	delete(a.model, id)
}

// adopt adds to the model the stored customer with this name, created
// by the page rather than by the test.
func (a *customersAPI) adopt(store app.Store, name string) app.Customer {
	a.t.Helper()
	all, err := store.List(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	for _, c := range all {
		if c.Name == name {
			a.model[c.ID] = c
			return c
		}
	}
	a.t.Fatalf("no customer named %q in the store", name)
	return app.Customer{}
}

func emailFor(name string) string {
	return strings.ToLower(strings.Fields(name)[0]) + "@example.com"
}

func (a *customersAPI) call(method, path string, status int, email, name string) app.Customer {
	a.t.Helper()
	var body io.Reader
	if name != "" {
		b, _ := json.Marshal(map[string]string{"name": name, "email": email})
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.srv.URL+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != status {
		a.t.Fatalf("%s %s: %d %s (%v); want %d", method, path, res.StatusCode, raw, err, status)
	}
	var c app.Customer
	if err := json.Unmarshal(raw, &c); err != nil {
		a.t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
	}
	return c
}

// want is what the page must show: every customer, by ID.
func (a *customersAPI) want() []pageRow {
	var rows []pageRow
	for _, c := range a.modelByID() {
		rows = append(rows, pageRow{ID: c.ID, Name: c.Name, Email: c.Email, InList: true})
	}
	return rows
}

// checkPage settles the page and compares what it shows with the model.
//
// It first creates one more customer, the fence, and waits for its row.
// The server delivers a connection's messages in seq order, so once the
// page shows the fence it has handled every earlier change: the rows can
// then be compared exactly, with no wait for them to become right (a
// missing, stale or duplicated customer shows up in the diff).
func (a *customersAPI) checkPage(b *browser, store app.Store) {
	a.t.Helper()
	fence := a.create("Fence Post")
	b.waitRow(fence)

	got := eval[[]pageRow](b, rowsJS)
	if diff := gocmp.Diff(a.want(), got); diff != "" {
		a.t.Errorf("the page's customers (-want +got):\n%s", diff)
	}
	// Recovered, the page shows no error and no "No customers yet".
	if msg := eval[string](b, `document.getElementById("error").textContent`); msg != "" {
		a.t.Errorf("the page still shows an error: %q", msg)
	}
	if !eval[bool](b, `document.getElementById("empty").hidden`) {
		a.t.Error(`the page shows "No customers yet" next to its customers`)
	}
	// The model is what the API answered; it must also be what was stored.
	stored, err := store.List(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	if diff := gocmp.Diff(a.modelByID(), stored); diff != "" {
		a.t.Errorf("the test's model differs from the store (-model +store):\n%s", diff)
	}
}

func (a *customersAPI) modelByID() []app.Customer {
	return slices.SortedFunc(maps.Values(a.model), func(x, y app.Customer) int { return cmp.Compare(x.ID, y.ID) })
}

// pageRow is one element of the page marked with data-id: a customer as
// the page shows it, and whether it is a row of the #customers table.
type pageRow struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Email  string `json:"email"`
	InList bool   `json:"inList"`
}

// rowsJS reads every [data-id] element of the page, in document order.
const rowsJS = `[...document.querySelectorAll("[data-id]")].map((el) => ({
	id: Number(el.dataset.id),
	name: el.querySelector("td.name")?.textContent ?? "",
	email: el.querySelector("td.email")?.textContent ?? "",
	inList: el.parentElement === document.getElementById("customers"),
}))`

// stateIs is a JavaScript condition: the page's #state reads s.
func stateIs(s string) string {
	return fmt.Sprintf(`document.getElementById("state")?.textContent === %s`, jsString(s))
}

// waitRow waits until the page shows c's row with c's current name.
func (b *browser) waitRow(c app.Customer) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("row %d %q", c.ID, c.Name), fmt.Sprintf(
		`document.querySelector('#customers [data-id="%d"] td.name')?.textContent === %s`, c.ID, jsString(c.Name)))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// countLists wraps the demo's handler to count GET /api/customers: the
// tests make none themselves, so each is the page loading its list.
func countLists(h http.Handler) (http.Handler, *atomic.Int32) {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/api/customers" {
			n.Add(1)
		}
		h.ServeHTTP(w, r)
	}), &n
}

// frame is a message the page received, as far as the tests look at it.
type frame struct {
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	Raw  string          `json:"-"`
}

func parseFrames(t *testing.T, raw []string) []frame {
	t.Helper()
	out := make([]frame, len(raw))
	for i, s := range raw {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			t.Fatalf("frame %q: %v", s, err)
		}
		out[i].Raw = s
	}
	return out
}

func ofType(frames []frame, typ string) []frame {
	return slices.DeleteFunc(slices.Clone(frames), func(f frame) bool { return f.Type != typ })
}

func gapReason(t *testing.T, f frame) string {
	t.Helper()
	var info struct{ Reason string }
	if err := json.Unmarshal(f.Data, &info); err != nil {
		t.Fatalf("notify.gap data %s: %v", f.Data, err)
	}
	return info.Reason
}

func (f frame) String() string { return f.Raw }
