package app

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
)

// Customer is the resource the API serves and the Data of every
// notification it broadcasts.
type Customer struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// ErrNotFound is returned by a [Store] for an ID it does not hold; the API
// answers 404.
var ErrNotFound = errors.New("app: customer not found")

// Store keeps customers. Implementations must be safe for concurrent use;
// [MemoryStore] is the one this example ships, and a database-backed one
// drops in behind the same five methods. Any error other than ErrNotFound
// makes the API answer 500.
type Store interface {
	// List returns every customer, ordered by ID.
	List(ctx context.Context) ([]Customer, error)

	// Get returns the customer with this ID, or ErrNotFound.
	Get(ctx context.Context, id int64) (Customer, error)

	// Create stores c under a new ID (c.ID is ignored) and returns it as
	// stored.
	Create(ctx context.Context, c Customer) (Customer, error)

	// Update replaces the customer with ID c.ID and returns it as stored,
	// or returns ErrNotFound.
	Update(ctx context.Context, c Customer) (Customer, error)

	// Delete removes the customer with this ID and returns it as it was,
	// or returns ErrNotFound.
	Delete(ctx context.Context, id int64) (Customer, error)
}

// ChangeNotifier is implemented by a [Store] that announces each change
// itself, in the same database transaction as the change (for example
// with github.com/wsnotify/notify/pgbroker's BroadcastTx), as a
// [notify.SocketMessage] of the type and data the API would broadcast.
// When NotifiesChanges returns true the API does not broadcast after the
// store returns: a change is announced if and only if it commits.
type ChangeNotifier interface {
	NotifiesChanges() bool
}

// MemoryStore is a [Store] held in memory, with IDs 1, 2, 3, … in order of
// creation. It is safe for concurrent use; its zero value is an empty store
// ready to use.
type MemoryStore struct {
	mu     sync.Mutex
	byID   map[int64]Customer
	lastID int64
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// List implements [Store].
func (s *MemoryStore) List(ctx context.Context) ([]Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Customer, 0, len(s.byID))
	for _, c := range s.byID {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Customer) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Get implements [Store].
func (s *MemoryStore) Get(ctx context.Context, id int64) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byID[id]
	if !ok {
		return Customer{}, ErrNotFound
	}
	return c, nil
}

// Create implements [Store].
func (s *MemoryStore) Create(ctx context.Context, c Customer) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[int64]Customer{}
	}
	s.lastID++
	c.ID = s.lastID
	s.byID[c.ID] = c
	return c, nil
}

// Update implements [Store].
func (s *MemoryStore) Update(ctx context.Context, c Customer) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[c.ID]; !ok {
		return Customer{}, ErrNotFound
	}
	s.byID[c.ID] = c
	return c, nil
}

// Delete implements [Store].
func (s *MemoryStore) Delete(ctx context.Context, id int64) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byID[id]
	if !ok {
		return Customer{}, ErrNotFound
	}
	delete(s.byID, id)
	return c, nil
}
