package notify

import (
	"bytes"
	_ "embed"
	"net/http"
	"strings"
	"time"
)

//go:embed notify.js
var script []byte

//go:embed notify.d.ts
var types []byte

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
//
// A request whose path ends in ".d.ts" gets the client's TypeScript
// declarations instead (application/typescript), every option, event and
// state: mux.Handle("GET /notify.d.ts", notify.ScriptHandler()). The
// same file sits beside notify.js in the module, for a build that copies
// both.
func ScriptHandler() http.Handler {
	modified := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, ".d.ts") {
			w.Header().Set("Content-Type", "application/typescript; charset=utf-8")
			http.ServeContent(w, req, "notify.d.ts", modified, bytes.NewReader(types))
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeContent(w, req, "notify.js", modified, bytes.NewReader(script))
	})
}
