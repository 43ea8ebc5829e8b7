// Package safecsv writes CSV that spreadsheets open as data, never as
// formulas: the one CSV writer of every export (policies, issuance log), and
// the reader's inverse of its neutralisation for documents read back.
package safecsv

import (
	"encoding/csv"
	"io"
	"strings"
)

// triggers are the first characters that make a spreadsheet evaluate a cell
// (OWASP's CSV injection list): '=', '+', '-', '@', tab and carriage return.
const triggers = "=+-@\t\r"

// Writer is a csv.Writer whose every cell is neutralised (see cell).
type Writer struct {
	w   *csv.Writer
	row []string
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: csv.NewWriter(w)} }

// Write writes one row, each cell neutralised.
func (w *Writer) Write(cells []string) error {
	w.row = w.row[:0]
	for _, c := range cells {
		w.row = append(w.row, cell(c))
	}
	return w.w.Write(w.row)
}

// Flush writes any buffered data and returns the first error so far.
func (w *Writer) Flush() error {
	w.w.Flush()
	return w.w.Error()
}

// cell neutralises a value a spreadsheet would run as a formula: one that
// starts with a trigger character gets a leading apostrophe, which
// spreadsheets show as text.
func cell(s string) string {
	if s != "" && strings.IndexByte(triggers, s[0]) >= 0 {
		return "'" + s
	}
	return s
}

// Uncell undoes cell for a value read back from a document this package
// wrote: an apostrophe followed by a trigger character is dropped. Callers
// use it only on fields whose valid values never start with an apostrophe
// (Agora channel names, rule subjects), so the inverse is exact.
func Uncell(s string) string {
	if len(s) >= 2 && s[0] == '\'' && strings.IndexByte(triggers, s[1]) >= 0 {
		return s[1:]
	}
	return s
}
