package e2e_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
)

// TestCustomersPageLayout opens the customers demo at a desktop width
// (1280 pixels) and a phone's (400), with customers whose names and emails
// are long enough to push a table's buttons off a narrow screen, and a
// live log with a resume in it. At each width it checks that no element
// of the page reaches past the viewport's right edge (nor starts left of
// it) and that the page cannot scroll sideways, and it writes a screenshot
// to the output folder (see outputDir), as it does of the page cut off at
// 400 pixels, its controls disabled. Then it checks that the log keeps
// only its newest 40 entries. Over WebSocket, and over SSE with the demo
// refusing upgrades.
func TestCustomersPageLayout(t *testing.T) {
	chromium(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { testCustomersPageLayout(t, tr) })
	}
}

func testCustomersPageLayout(t *testing.T, transport string) {
	store := app.NewMemoryStore()
	reg := notify.New(nil)
	t.Cleanup(func() { reg.Close() })
	srv := httptest.NewServer(demoSite(transport, reg, store))
	t.Cleanup(srv.Close)
	px := newProxy(t, srv.Listener.Addr().String())
	api := newCustomersAPI(t, srv)

	api.create("Ada Lovelace")
	api.createWith("Maximiliane Alexandrina Featherstonehaugh-Montgomery-Wolfeschlegelstein",
		"maximiliane.alexandrina.featherstonehaugh-montgomery@accounts.example-holdings-international.com")
	b := newBrowser(t)
	b.navigate(px.url())
	b.waitFor(`#state is "open"`, stateIs("open"))
	b.waitRow(api.create("Grace Hopper"))
	b.waitRow(api.createWith("Zed", "z@example.com"))
	b.waitRow(api.update(api.create("Barbara Liskov").ID, "Barbara Liskov-Turing"))

	px.stop()
	b.waitFor(`#state leaves "open"`, "!("+stateIs("open")+")")
	ken := api.create("Ken Thompson")
	px.start()
	b.waitRow(ken)
	b.waitFor("the log to show the resume", `document.querySelector("#log li[data-kind=resume]") !== null`)

	for _, width := range []int64{1280, 400} {
		run(b, fmt.Sprintf("resizing the viewport to %d pixels", width), chromedp.EmulateViewport(width, 900))
		checkNoOverflow(t, b, width)
		b.screenshot(fmt.Sprintf("customers-%s-%d.png", transport, width))
	}

	px.stop()
	b.waitFor(`#state leaves "open"`, "!("+stateIs("open")+")")
	checkControls(t, b, false)
	checkNoOverflow(t, b, 400)
	b.screenshot(fmt.Sprintf("customers-%s-400-offline.png", transport))

	// The log keeps the newest 40 entries.
	px.start()
	b.waitFor(`#state is "open" again`, stateIs("open"))
	var last app.Customer
	for i := range 45 {
		last = api.create(fmt.Sprintf("Filler %d", i))
	}
	b.waitRow(last)
	entries := eval[[]liveLogEntry](b, logJS)
	if len(entries) != 40 || entries[39].Seq != reg.Position().Seq {
		t.Errorf("the log holds %d entries, the newest %+v; want 40, the newest the last change, seq %d", len(entries), entries[len(entries)-1], reg.Position().Seq)
	}
}

// checkNoOverflow fails the test if the page, its viewport width pixels
// wide, can scroll sideways or has a visible element whose box reaches
// past either side of the viewport.
func checkNoOverflow(t *testing.T, b *browser, width int64) {
	t.Helper()
	type overflow struct {
		Viewport, Scroll int
		Outside          []string // each element outside, with its box
	}
	got := eval[overflow](b, `(() => {
		const root = document.documentElement;
		const outside = [];
		for (const el of document.body.querySelectorAll("*")) {
			const r = el.getBoundingClientRect();
			if (r.width === 0 && r.height === 0) continue; // not rendered
			if (r.left < -0.5 || r.right > root.clientWidth + 0.5) {
				const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + el.className : "");
				outside.push(name + " " + Math.round(r.left) + ".." + Math.round(r.right));
			}
		}
		return { viewport: root.clientWidth, scroll: root.scrollWidth, outside };
	})()`)
	if got.Viewport > int(width) || got.Viewport < int(width)-20 {
		t.Fatalf("the page's viewport is %d pixels wide, want %d (less a scroll bar)", got.Viewport, width)
	}
	if got.Scroll > got.Viewport || len(got.Outside) > 0 {
		t.Errorf("at %d pixels the page is %d pixels wide (viewport %d) and these elements reach outside it:\n%s",
			width, got.Scroll, got.Viewport, strings.Join(got.Outside, "\n"))
	}
}

// screenshot writes a PNG of the whole page to the output folder.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := run(b, "taking a screenshot", chromedp.FullScreenshot(100)) // 100: PNG
	path := filepath.Join(outputDir(b.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatalf("writing the screenshot: %v", err)
	}
	b.t.Logf("screenshot: %s", path)
}

var (
	outputOnce sync.Once
	outputPath string
	outputErr  error
)

// outputDir returns the folder the browser tests write what they produce
// for people to look at (screenshots): $E2E_OUTPUT_DIR if set, else
// notify-e2e in the system's temporary directory, which outlives the test
// (t.TempDir does not), created if need be.
func outputDir(t *testing.T) string {
	t.Helper()
	outputOnce.Do(func() {
		outputPath = os.Getenv("E2E_OUTPUT_DIR")
		if outputPath == "" {
			outputPath = filepath.Join(os.TempDir(), "notify-e2e")
		}
		outputErr = os.MkdirAll(outputPath, 0o755)
	})
	if outputErr != nil {
		t.Fatalf("the output folder: %v", outputErr)
	}
	return outputPath
}
