package pgbroker

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// schema returns the tables and functions of the stream named p, each
// created if missing (functions are replaced, so a newer version of this
// package updates them). The names are p_log, p_meta, p_enqueue, p_relay,
// p_publish and p_trim, and p is also the LISTEN channel.
//
// p_log holds every message: id orders unnumbered rows; pos is the row's
// place in the one order (raw messages included) and seq its sequence
// number (NULL for raw messages), both NULL until the relay numbers the
// row, after its transaction committed. p_meta is one row: the epoch and
// the last pos and seq given.
func schema(p string) string {
	r := strings.NewReplacer("{p}", p, "{chan}", quoteLiteral(p))
	return r.Replace(`
CREATE TABLE IF NOT EXISTS {p}_meta (
	one   boolean PRIMARY KEY DEFAULT true CHECK (one),
	epoch text    NOT NULL,
	pos   bigint  NOT NULL,
	seq   bigint  NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}_log (
	id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	pos    bigint UNIQUE,
	seq    bigint UNIQUE,
	epoch  text,
	at     timestamptz,
	topic  text    NOT NULL DEFAULT '',
	usr    text    NOT NULL DEFAULT '',
	client text    NOT NULL DEFAULT '',
	raw    boolean NOT NULL DEFAULT false,
	body   bytea   NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}_log_pending ON {p}_log (id) WHERE pos IS NULL;

-- enqueue appends one message, unnumbered, in the caller's transaction,
-- and wakes every listening node when that transaction commits.
CREATE OR REPLACE FUNCTION {p}_enqueue(p_topic text, p_usr text, p_client text, p_raw boolean, p_body bytea)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
	new_id bigint;
BEGIN
	INSERT INTO {p}_log (topic, usr, client, raw, body)
	VALUES (p_topic, p_usr, p_client, p_raw, p_body) RETURNING id INTO new_id;
	PERFORM pg_notify({chan}, '');
	RETURN new_id;
END $fn$;

-- relay numbers committed, unnumbered rows (at most batch of them) in id
-- order, after every row numbered before. Relays run one at a time (an
-- advisory lock on p_meta's oid), each statement with a fresh snapshot, so
-- a relay sees everything the previous one numbered, and the numbers
-- become visible in order: a reader that sees pos N sees every pos below.
-- It starts a new epoch when p_meta is missing (a new, recreated or
-- truncated stream) or when the log lost its newest numbered row, which
-- trimming never deletes (the log was truncated). It returns the epoch,
-- the last pos and seq, whether more rows wait, and the seq of row mine.
CREATE OR REPLACE FUNCTION {p}_relay(new_epoch text, batch integer, mine bigint,
	OUT out_epoch text, OUT out_pos bigint, OUT out_seq bigint, OUT out_more boolean, OUT out_mine bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
	m {p}_meta%ROWTYPE;
	n integer;
BEGIN
	-- Fast path, without the lock: nothing waits to be numbered (a row
	-- that a running relay is numbering still counts as waiting), and the
	-- stream is intact. Nodes woken by one commit mostly end here.
	IF mine IS NULL AND NOT EXISTS (SELECT 1 FROM {p}_log WHERE pos IS NULL) THEN
		SELECT * INTO m FROM {p}_meta;
		IF FOUND AND (m.pos = 0 OR EXISTS (SELECT 1 FROM {p}_log WHERE pos = m.pos)) THEN
			out_epoch := m.epoch; out_pos := m.pos; out_seq := m.seq; out_more := false;
			RETURN;
		END IF;
	END IF;

	PERFORM pg_advisory_xact_lock('{p}_meta'::regclass::oid::integer, 0);
	SELECT * INTO m FROM {p}_meta;
	IF NOT FOUND THEN
		DELETE FROM {p}_log WHERE pos IS NOT NULL; -- numbered in an epoch that is gone
		INSERT INTO {p}_meta (epoch, pos, seq) VALUES (new_epoch, 0, 0) RETURNING * INTO m;
	ELSIF m.pos > 0 AND NOT EXISTS (SELECT 1 FROM {p}_log WHERE pos = m.pos) THEN
		DELETE FROM {p}_log WHERE pos IS NOT NULL;
		UPDATE {p}_meta SET epoch = new_epoch, pos = 0, seq = 0 RETURNING * INTO m;
	END IF;

	WITH pending AS (
		SELECT l.id, l.raw,
			row_number() OVER w AS n,
			count(*) FILTER (WHERE NOT l.raw) OVER w AS k
		FROM {p}_log l WHERE l.pos IS NULL
		WINDOW w AS (ORDER BY l.id)
		ORDER BY l.id LIMIT batch
	), numbered AS (
		UPDATE {p}_log l
		SET pos = m.pos + p.n,
			seq = CASE WHEN p.raw THEN NULL ELSE m.seq + p.k END,
			epoch = m.epoch,
			at = clock_timestamp()
		FROM pending p WHERE l.id = p.id
		RETURNING l.pos, l.seq
	)
	SELECT count(*), coalesce(max(pos), m.pos), coalesce(max(seq), m.seq) INTO n, out_pos, out_seq FROM numbered;
	IF n > 0 THEN
		UPDATE {p}_meta SET pos = out_pos, seq = out_seq;
	END IF;
	out_epoch := m.epoch;
	out_more := n = batch;
	IF mine IS NOT NULL THEN
		SELECT l.seq INTO out_mine FROM {p}_log l WHERE l.id = mine;
	END IF;
END $fn$;

-- publish is enqueue and relay in one transaction of its own, for
-- Registry.Broadcast: it returns the message's seq (0 for a raw message,
-- which the next relay of any node numbers).
CREATE OR REPLACE FUNCTION {p}_publish(new_epoch text, p_topic text, p_usr text, p_client text, p_raw boolean, p_body bytea)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
	new_id bigint;
	r record;
BEGIN
	new_id := {p}_enqueue(p_topic, p_usr, p_client, p_raw, p_body);
	IF p_raw THEN
		RETURN 0;
	END IF;
	SELECT * INTO r FROM {p}_relay(new_epoch, 10000, new_id);
	RETURN coalesce(r.out_mine, 0);
END $fn$;

-- trim deletes numbered rows beyond the newest keep, and those numbered
-- before max_age ago, but never the newest one (relay reads its absence as
-- a truncated log). It takes no lock that publishers or the relay wait for.
CREATE OR REPLACE FUNCTION {p}_trim(keep bigint, max_age interval)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
	head bigint;
	fresh bigint;
	n bigint;
BEGIN
	SELECT pos INTO head FROM {p}_meta;
	IF head IS NULL THEN
		RETURN 0;
	END IF;
	SELECT pos INTO fresh FROM {p}_log
	WHERE pos IS NOT NULL AND at >= clock_timestamp() - max_age ORDER BY pos LIMIT 1;
	DELETE FROM {p}_log WHERE pos < least(greatest(head - keep + 1, coalesce(fresh, head)), head);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END $fn$;
`)
}

// ensureSchema creates the stream's tables and functions, one node at a
// time (concurrent CREATE ... IF NOT EXISTS can collide).
func ensureSchema(ctx context.Context, conn interface {
	Begin(context.Context) (pgx.Tx, error)
}, p string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "wsnotify/pgbroker schema "+p); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, schema(p)); err != nil {
		return fmt.Errorf("creating tables: %w", err)
	}
	return tx.Commit(ctx)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
