package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what the API accepts.
const (
	// MaxNameLen is the longest name, in characters, after surrounding
	// white space is trimmed. A name must not be empty or contain control
	// characters.
	MaxNameLen = 100

	// MaxEmailLen is the longest email address, in bytes (the limit of
	// RFC 5321). An address must be a bare addr-spec such as
	// ada@example.com, without a display name.
	MaxEmailLen = 254

	// MaxBodyBytes is the largest request body; a larger one is answered
	// with 413.
	MaxBodyBytes = 4 << 10
)

// customerInput is the only body POST and PUT accept: any other field,
// including "id", is refused.
type customerInput struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// readCustomer decodes and validates a request body. If it is not a valid
// customer it answers the request and returns false.
func readCustomer(w http.ResponseWriter, r *http.Request) (Customer, bool) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return Customer{}, false
	}
	var in customerInput
	err := decode(http.MaxBytesReader(w, r.Body, MaxBodyBytes), &in)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
		return Customer{}, false
	}
	if err == nil {
		in.Name = strings.TrimSpace(in.Name)
		in.Email = strings.TrimSpace(in.Email)
		err = validate(in)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return Customer{}, false
	}
	return Customer{Name: in.Name, Email: in.Email}, true
}

// decode reads exactly one JSON object with no unknown fields into v, and
// words encoding/json's errors for the API's clients. Read errors, such as
// *http.MaxBytesError, are returned as they are.
func decode(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		_, err = dec.Token()
		if err == io.EOF {
			return nil
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return errors.New("request body must hold a single JSON object")
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: unexpected end of body")
	case errors.As(err, &syntax):
		return fmt.Errorf("malformed JSON at byte %d", syntax.Offset) // counted from 1
	case errors.As(err, &typ) && typ.Field == "":
		return errors.New("request body must be a JSON object")
	case errors.As(err, &typ):
		return fmt.Errorf("field %q must be a %s, not a %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return err
}

// validate checks the fields of a trimmed input.
func validate(in customerInput) error {
	switch {
	case in.Name == "":
		return errors.New("name is required")
	case utf8.RuneCountInString(in.Name) > MaxNameLen:
		return fmt.Errorf("name is longer than %d characters", MaxNameLen)
	case strings.ContainsFunc(in.Name, unicode.IsControl):
		return errors.New("name must not contain control characters")
	case in.Email == "":
		return errors.New("email is required")
	case len(in.Email) > MaxEmailLen:
		return fmt.Errorf("email is longer than %d bytes", MaxEmailLen)
	}
	if addr, err := mail.ParseAddress(in.Email); err != nil || addr.Name != "" || addr.Address != in.Email {
		return errors.New("email is not a valid address")
	}
	return nil
}

// pathID parses the {id} of the request's path: a positive decimal
// integer. If it is not one it answers the request and returns false.
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid customer id %q", s))
		return 0, false
	}
	return id, true
}

// storeError answers a failed store call: 404 for ErrNotFound, else 500
// with the detail logged rather than shown.
func storeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("customer %s not found", r.PathValue("id")))
		return
	}
	slog.ErrorContext(r.Context(), "customers: store failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

// methodNotAllowed answers 405 for methods a path does not support.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use %s", r.Method, allow))
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("customers: encoding a response: " + err.Error()) // only this package's own types are encoded
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
