// Package wiretest decodes the frames a notify server sends, as a client
// does, for the tests of the root module, the demo (examples/customers)
// and the nested modules (redisbroker, pgbroker). It is internal: its API
// may change with the tests that use it.
package wiretest

import (
	"encoding/json"
	"time"
)

// Message is a frame as a client decodes it: the envelope of a broadcast
// ({"seq":…,"type":…,"topic":…,"data":…,"time":…}) or a library message
// (notify.hello, notify.gap, …), or, in Text, a frame sent as is by
// Registry.NotifyText.
type Message struct {
	Seq   uint64          `json:"seq"`
	Type  string          `json:"type"`
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
	Time  time.Time       `json:"time"`
	Text  string          `json:"-"`
}

// Decode decodes one text frame. A frame that begins with '{' is an
// envelope and must decode as one; any other frame is text sent as is and
// comes back in Text.
func Decode(b []byte) (Message, error) {
	if len(b) == 0 || b[0] != '{' {
		return Message{Text: string(b)}, nil
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, err
	}
	return m, nil
}
