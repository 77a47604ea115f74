package main

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wsnotify/notify"
	"github.com/wsnotify/notify/examples/customers/app"
	"github.com/wsnotify/notify/pgbroker"
)

// store is an [app.Store] on a PostgreSQL table. Every change writes its
// notification with pgbroker's BroadcastTx in the change's transaction,
// after the change: the page hears of it if and only if it commits, and
// two changes of one customer are announced in the order the row lock
// let them commit.
type store struct {
	db *pgxpool.Pool
	b  *pgbroker.Broker
}

var (
	_ app.Store          = (*store)(nil)
	_ app.ChangeNotifier = (*store)(nil)
)

func newStore(ctx context.Context, db *pgxpool.Pool, b *pgbroker.Broker) (*store, error) {
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS customers (
		id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		name  text NOT NULL,
		email text NOT NULL
	)`)
	return &store{db: db, b: b}, err
}

// NotifiesChanges tells the API not to broadcast: the store does, in the
// transaction.
func (s *store) NotifiesChanges() bool { return true }

func (s *store) List(ctx context.Context) ([]app.Customer, error) {
	rows, _ := s.db.Query(ctx, "SELECT id, name, email FROM customers ORDER BY id")
	return pgx.CollectRows(rows, pgx.RowToStructByPos[app.Customer])
}

func (s *store) Get(ctx context.Context, id int64) (app.Customer, error) {
	return s.one(ctx, s.db, "SELECT id, name, email FROM customers WHERE id = $1", id)
}

func (s *store) Create(ctx context.Context, c app.Customer) (app.Customer, error) {
	return s.change(ctx, "customer.created", "INSERT INTO customers (name, email) VALUES ($1, $2) RETURNING id, name, email", c.Name, c.Email)
}

func (s *store) Update(ctx context.Context, c app.Customer) (app.Customer, error) {
	return s.change(ctx, "customer.updated", "UPDATE customers SET name = $2, email = $3 WHERE id = $1 RETURNING id, name, email", c.ID, c.Name, c.Email)
}

func (s *store) Delete(ctx context.Context, id int64) (app.Customer, error) {
	return s.change(ctx, "customer.deleted", "DELETE FROM customers WHERE id = $1 RETURNING id, name, email", id)
}

// change runs one statement that returns the customer, and writes the
// notification typ about it, in one transaction.
func (s *store) change(ctx context.Context, typ, sql string, args ...any) (c app.Customer, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if c, err = s.one(ctx, tx, sql, args...); err != nil {
			return err
		}
		return s.b.BroadcastTx(ctx, tx, notify.SocketMessage{Type: typ, Data: c})
	})
	return c, err
}

func (s *store) one(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) (app.Customer, error) {
	rows, _ := q.Query(ctx, sql, args...)
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[app.Customer])
	if errors.Is(err, pgx.ErrNoRows) {
		return app.Customer{}, app.ErrNotFound
	}
	return c, err
}
