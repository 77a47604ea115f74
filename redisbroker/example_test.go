package redisbroker_test

import (
	"context"
	"log"
	"net/http"

	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/redisbroker"
)

// Every node runs the same code: only the broker differs from a
// single-process server. (Not run by go test: it needs a Redis.)
func Example() {
	ctx := context.Background()
	b, err := redisbroker.New(ctx, &redisbroker.Options{Addr: "localhost:6379"})
	if err != nil {
		log.Fatal(err) // Redis unreachable, or older than 5.0
	}
	defer b.Close()
	reg := notify.New(&notify.Options{Broker: b})
	defer reg.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /ws", reg.Handler())
	mux.HandleFunc("POST /customers", func(w http.ResponseWriter, r *http.Request) {
		// … save the customer, then tell every page on every node:
		if err := reg.Broadcast(r.Context(), notify.SocketMessage{Type: "customer.created", Topic: "customers"}); err != nil {
			log.Print(err) // Redis unreachable: no client got it
		}
	})
	log.Fatal(http.ListenAndServe(":8080", mux))
}
