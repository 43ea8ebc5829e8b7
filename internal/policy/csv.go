package policy

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/safecsv"
)

// csvHeader is the first row of every policy CSV document. A document
// written before projects existed has every column but the last; its rules
// are read as Rule.Normalized says.
var csvHeader = []string{"subject", "channel", "role", "effect", "maxTtlSeconds", "project"}

// CSVRule is a rule read from a CSV document with the line it came from.
type CSVRule struct {
	Line int
	Rule Rule
}

// maxRowErrors bounds how many bad rows readCSV reports.
const maxRowErrors = 50

// readCSV reads and validates a policy CSV document: the header
// subject,channel,role,effect,maxTtlSeconds,project (or the same without
// project), then one rule per row (an empty maxTtlSeconds means no limit, an
// empty project the default one; lines starting with "#" are comments). Admin
// rights are rows with role read or write on api:policies or api:audit.
// Every bad row is reported (the first maxRowErrors), in one Invalid error
// whose Field names the first one's column and whose message lists each as
// "line N: column: why"; a row repeating an earlier one is one of them. A
// document that is not CSV fails at its first syntax error.
func readCSV(r io.Reader) ([]CSVRule, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.ReuseRecord = true
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, apperr.New(apperr.Invalid, "line 1: the header %q is missing", strings.Join(csvHeader, ","))
	}
	if err != nil {
		return nil, csvError(err)
	}
	if len(head) > 0 {
		head[0] = strings.TrimPrefix(head[0], "\ufeff")
	}
	if !slices.Equal(head, csvHeader) && !slices.Equal(head, csvHeader[:len(csvHeader)-1]) {
		return nil, apperr.New(apperr.Invalid, "line 1: the header must be %q", strings.Join(csvHeader, ","))
	}
	cr.FieldsPerRecord = len(head)
	type rowError struct {
		line       int
		field, why string
	}
	var (
		out     []CSVRule
		bad     []rowError
		badRows int
	)
	fail := func(line int, field, why string) {
		badRows++
		if len(bad) < maxRowErrors {
			bad = append(bad, rowError{line, field, why})
		}
	}
	seen := make(map[Line]int)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(err)
		}
		line, _ := cr.FieldPos(0)
		// Cells are read back as WriteCSV neutralised them: no valid
		// subject or channel starts with an apostrophe.
		rule := Rule{Subject: safecsv.Uncell(rec[0]), Channel: safecsv.Uncell(rec[1]), Role: Role(rec[2]), Effect: Effect(rec[3])}
		if len(rec) > 5 {
			rule.Project = rec[5]
		}
		if rec[4] != "" {
			ttl, err := strconv.Atoi(rec[4])
			if err != nil {
				fail(line, "maxTtlSeconds", fmt.Sprintf("%q is not a whole number of seconds", rec[4]))
				continue
			}
			rule.MaxTTLSeconds = ttl
		}
		if err := rule.Validate(); err != nil {
			ae, _ := apperr.As(err)
			fail(line, ae.Field, ae.Message)
			continue
		}
		rule = rule.Normalized()
		key := lineFromRule(rule)
		if first, dup := seen[key]; dup {
			fail(line, "", fmt.Sprintf("repeats the rule on line %d", first))
			continue
		}
		seen[key] = line
		out = append(out, CSVRule{Line: line, Rule: rule})
	}
	if badRows == 0 {
		return out, nil
	}
	first := bad[0]
	if badRows == 1 && first.field == "" {
		return nil, apperr.New(apperr.Invalid, "line %d %s", first.line, first.why)
	}
	if badRows == 1 {
		return nil, apperr.Field(first.field, "line %d: %s", first.line, first.why)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d bad rows, nothing imported: ", badRows)
	for i, e := range bad {
		if i > 0 {
			b.WriteString("; ")
		}
		if e.field != "" {
			fmt.Fprintf(&b, "line %d: %s: %s", e.line, e.field, e.why)
		} else {
			fmt.Fprintf(&b, "line %d %s", e.line, e.why)
		}
	}
	if badRows > len(bad) {
		fmt.Fprintf(&b, "; and %d more", badRows-len(bad))
	}
	return nil, apperr.Field(first.field, "%s", b.String())
}

// csvError reports a CSV syntax error with its line, without echoing input.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return apperr.New(apperr.Invalid, "line %d: %s", pe.Line, pe.Err)
	}
	return apperr.Wrap(apperr.Invalid, err, "the policy CSV could not be read")
}

// WriteCSV writes rules in the format readCSV reads (an import), with every cell a
// spreadsheet would run as a formula neutralised (package safecsv).
func WriteCSV(w io.Writer, rules []Rule) error {
	cw := safecsv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("policy: write CSV: %w", err)
	}
	for _, r := range rules {
		ttl := ""
		if r.MaxTTLSeconds != 0 {
			ttl = strconv.Itoa(r.MaxTTLSeconds)
		}
		if err := cw.Write([]string{r.Subject, r.Channel, string(r.Role), string(r.Effect), ttl, r.Normalized().Project}); err != nil {
			return fmt.Errorf("policy: write CSV: %w", err)
		}
	}
	if err := cw.Flush(); err != nil {
		return fmt.Errorf("policy: write CSV: %w", err)
	}
	return nil
}
