// Package notify pushes change notifications from a Go HTTP service to every
// connected browser or app over WebSocket, in order, with nothing lost across
// a reconnect.
//
// # Getting started
//
// Create one [Registry], mount its [Registry.Handler], and broadcast after
// each change:
//
//	reg := notify.New(nil)
//	mux.Handle("GET /ws", reg.Handler())
//	reg.Broadcast(ctx, notify.SocketMessage{Type: "customer.created", Data: c})
//
// Every connection receives {"seq":1,"type":"customer.created","data":{…},"time":"…"}.
// [Registry.NotifyText] sends a plain text frame instead (never one a client
// could take for a numbered or a library message). Stop with
// [Registry.Shutdown], which flushes what is queued and closes every
// connection with 1001.
//
// # Delivery
//
// [Registry.Broadcast] encodes a message once, publishes it (it gets its
// seq and is kept in history) and returns; one dispatcher goroutine per
// Registry then queues the same bytes for every matching connection, and a
// few pooled writers send each connection's backlog with one system call.
// Nothing waits on a client's network. Each connection has a bounded queue
// ([Options.QueueLength], [Options.QueueBytes]) and at most one writer at a
// time. A client that falls behind is closed with [CloseSlowConsumer]; it
// reconnects and resumes.
//
// # Resume
//
// Every broadcast gets a sequence number from the [Broker], which keeps a
// bounded history. A client that connects with ?since=SEQ&epoch=EPOCH gets a
// notify.hello, every retained message after SEQ, then live messages, with
// no gap and no duplicate; if the history cannot cover SEQ it gets a
// notify.gap and should reload its state. [Registry.Position] lets a REST
// response tell the page where its snapshot ends. The JavaScript client
// served by [ScriptHandler] does all of this.
//
// # Server-Sent Events
//
// The same handler serves a GET with Accept: text/event-stream as a
// Server-Sent Events stream, for networks that break WebSocket and for
// pages without a library: each message is an event with id SEQ:EPOCH,
// its type as the event name and the same JSON as data, and the browser's
// EventSource resumes by itself with Last-Event-ID. Streams are
// connections of the same Registry, with the same order, limits, queues
// and resume; see [Registry.Handler] and [TypeClose].
//
// # Topics and targets
//
// Clients subscribe with ?topic=NAME or a notify.subscribe message,
// authorised by [Options.AuthorizeTopic]. [SocketMessage.Topic],
// [SocketMessage.User] and [SocketMessage.ClientID] narrow delivery.
//
// # Safety
//
// Same-origin only by default ([Options.OriginPatterns]), an
// [Options.Authorize] hook before the upgrade, inbound size and rate limits,
// UTF-8 validation, heartbeats that remove dead peers, and connection limits.
// Every refusal has a documented HTTP status or close code; see
// [Registry.Handler] and the Close constants.
package notify
