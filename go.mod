module github.com/wsnotify/notify

go 1.23

require (
	github.com/coder/websocket v1.8.15
	github.com/google/go-cmp v0.7.0
	go.uber.org/goleak v1.3.0
)
