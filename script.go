package notify

import (
	"bytes"
	_ "embed"
	"net/http"
	"time"
)

//go:embed notify.js
var script []byte

// ScriptHandler serves the JavaScript client, an ES module with no
// dependencies: mux.Handle("GET /notify.js", notify.ScriptHandler()), then
// in the page:
//
//	import { connect } from "/notify.js";
//	const n = connect("/ws", { topics: ["customers"] });
//	n.on("customer.created", (data) => console.log(data));
//
// The client reconnects with exponential backoff and jitter, resumes from
// the last seq it saw, drops duplicates, and reports gaps (onGap) and
// connection state (onState).
func ScriptHandler() http.Handler {
	modified := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeContent(w, req, "notify.js", modified, bytes.NewReader(script))
	})
}
