package notify

import (
	"context"
	"errors"
	"fmt"
)

// gapInfo is the data of a notify.gap message.
type gapInfo struct {
	Reason string `json:"reason"` // "expired", "epoch", "ahead" or "unavailable"
	Since  uint64 `json:"since"`  // what the client asked for
	Epoch  string `json:"epoch"`  // the stream's epoch and position: continue from here
	Seq    uint64 `json:"seq"`
}

// replay builds what a resuming client receives before live messages: a
// hello, then either the retained messages after o.Since that match it, or
// a gap. last is the seq of the last message delivered live before c was
// registered, so the replay ends exactly where live delivery begins.
func (r *Registry) replay(ctx context.Context, c *Client, o ConnOptions, last uint64) []item {
	epoch := *r.epoch.Load()
	pos := Position{Epoch: epoch, Seq: last}
	items := []item{{b: controlFrame(TypeHello, pos)}}
	gap := func(reason string) []item {
		return append(items, item{b: controlFrame(TypeGap, gapInfo{reason, o.Since, pos.Epoch, pos.Seq})})
	}
	switch {
	case o.FromNow || o.Since == last && (o.Epoch == "" || o.Epoch == epoch):
		return items
	case o.Epoch != "" && o.Epoch != epoch:
		return gap("epoch")
	case o.Since > last:
		return gap("ahead")
	}
	msgs, err := r.broker.History(ctx, o.Since, last)
	if errors.Is(err, ErrHistoryGap) {
		return gap("expired")
	}
	if err != nil {
		r.opts.Logger.Warn("notify: reading history for resume", "client", c.id, "err", err)
		return gap("unavailable")
	}
	for i := range msgs {
		if msgs[i].Epoch != "" && msgs[i].Epoch != epoch {
			return gap("epoch") // the broker's history moved on since last was read
		}
		if !c.matches(&msgs[i]) {
			continue
		}
		f, err := frame(&msgs[i])
		if err != nil { // skipped live too (see deliver)
			r.opts.Logger.Error("notify: skipping a message from the broker's history", "client", c.id, "seq", msgs[i].Seq, "err", err)
			continue
		}
		items = append(items, item{b: f})
	}
	return items
}

// release puts the replay ahead of the live messages queued meanwhile and
// starts writing. The replay is not held to QueueLength: history bounds it.
func (c *Client) release(replay []item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if c.dead {
		return
	}
	c.queue = append(replay, c.queue...)
	for _, it := range replay {
		c.queuedBytes += len(it.b)
	}
	c.r.stats.queued.Add(uint64(len(replay)))
	c.startWriter()
}

// errTopic is wrapped by topic refusals: invalid names, too many topics.
var errTopic = errors.New("notify: topic refused")

// checkTopics validates and authorises the topics of a new connection.
func (r *Registry) checkTopics(ctx context.Context, id Identity, topics []string) error {
	if len(topics) > r.opts.MaxTopics {
		return fmt.Errorf("%w: %d topics, at most %d allowed", errTopic, len(topics), r.opts.MaxTopics)
	}
	for _, t := range topics {
		if err := r.checkTopic(ctx, id, t); err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) checkTopic(ctx context.Context, id Identity, topic string) error {
	if !ValidTopic(topic) {
		return fmt.Errorf("%w: invalid topic name %q", errTopic, topic)
	}
	if r.opts.AuthorizeTopic == nil {
		return nil
	}
	if err := r.opts.AuthorizeTopic(ctx, id, topic); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrForbidden, topic, err)
	}
	return nil
}
