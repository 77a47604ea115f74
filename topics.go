package notify

// Topics: their names, the checks of a connection's topics (with
// Options.AuthorizeTopic), and subscribing and unsubscribing at run time.

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

const maxTopicLen = 128

// ValidTopic reports whether name can be used as a topic: 1 to 128 bytes of
// ASCII letters, digits and the punctuation - _ . : / @.
func ValidTopic(name string) bool {
	if name == "" || len(name) > maxTopicLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.:/@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// errTopic is wrapped by topic refusals: invalid names, too many topics.
var (
	errTopic         = errors.New("notify: topic refused")
	errTooManyTopics = fmt.Errorf("%w: too many topics", errTopic)
)

// checkTopics validates and authorises the topics of a new connection.
func (r *Registry) checkTopics(ctx context.Context, id Identity, topics []string) error {
	if len(topics) > r.opts.MaxTopics {
		return fmt.Errorf("%w: %d, at most %d allowed", errTooManyTopics, len(topics), r.opts.MaxTopics)
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
	hook := r.opts.AuthorizeTopic
	if hook == nil {
		return nil
	}
	var err error
	if perr := r.contain("AuthorizeTopic", func() { err = hook(ctx, id, topic) }, "user", id.User, "topic", topic); perr != nil {
		return perr
	}
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrForbidden, topic, err)
	}
	return nil
}

// subscribe adds a topic at run time. Messages broadcast from then on are
// delivered; earlier ones are not replayed.
func (c *Client) subscribe(ctx context.Context, topic string) error {
	if err := c.r.checkTopic(ctx, c.ident, topic); err != nil {
		return err
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if _, ok := c.topics[topic]; ok {
		return nil
	}
	if len(c.topics) >= c.r.opts.MaxTopics {
		return fmt.Errorf("%w: at most %d allowed", errTooManyTopics, c.r.opts.MaxTopics)
	}
	c.topics[topic] = struct{}{}
	addToSet(c.r.byTopic, topic, c)
	return nil
}

func (c *Client) unsubscribe(topic string) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if _, ok := c.topics[topic]; ok {
		delete(c.topics, topic)
		removeFromSet(c.r.byTopic, topic, c)
	}
}
