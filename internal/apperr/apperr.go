// Package apperr defines the one error type that crosses package boundaries: a
// kind (invalid, unauthorized, forbidden, …) plus a message safe to show a client.
// It never carries secrets or internal detail; those stay in the wrapped cause,
// which only reaches logs.
package apperr

import (
	"errors"
	"fmt"
)

// Kind classifies an error for transports; the HTTP layer maps each kind to one
// status code and one problem type.
type Kind string

// The kinds of error the broker reports.
const (
	Invalid      Kind = "invalid"      // the request is malformed or out of range (400)
	Unauthorized Kind = "unauthorized" // no valid credentials (401)
	Forbidden    Kind = "forbidden"    // authenticated, but not allowed (403)
	NotFound     Kind = "not_found"    // the thing asked for does not exist (404)
	Conflict     Kind = "conflict"     // the change clashes with existing state (409)
	TooLarge     Kind = "too_large"    // the request body is over the limit (413)
	TooMany      Kind = "rate_limited" // the caller is over its rate limit (429)
	Unavailable  Kind = "unavailable"  // a dependency is down; retry later (503)
	Internal     Kind = "internal"     // a bug or unexpected failure (500)
)

// Error is an error with a kind and a client-safe message. Field names the input
// at fault, when there is one. Cause is for logs only and never shown to clients.
type Error struct {
	Kind    Kind
	Field   string
	Message string
	Cause   error
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Cause != nil {
		return msg + ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// New returns an error of the given kind with a formatted client-safe message.
func New(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Field returns an Invalid error about one named input.
func Field(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of the given kind whose cause is err; message is what a
// client may see.
func Wrap(kind Kind, err error, message string) *Error {
	return &Error{Kind: kind, Message: message, Cause: err}
}

// KindOf reports the kind of err: the kind of the first *Error in its chain, or
// Internal when there is none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// As returns the first *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
