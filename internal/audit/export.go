package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/safecsv"
)

// Export formats.
const (
	FormatCSV   = "csv"
	FormatJSONL = "jsonl"
)

// csvHeader names the CSV columns, in order.
var csvHeader = []string{
	"seq", "time", "request_id", "issuer", "subject", "account", "uid", "groups",
	"service", "channel", "role", "requested_ttl_seconds", "granted_ttl_seconds",
	"decision", "reason", "rule", "policy_version", "client_ip", "user_agent",
	"token_fingerprint", "key_id", "prev_hash", "hash", "trace_id", "project", "app_id",
}

// exporter writes records in one format.
type exporter struct {
	buf *bufio.Writer
	csv *safecsv.Writer
	enc *json.Encoder
	row []string // a CSV row's cells, reused
}

func newExporter(format string, w io.Writer) (*exporter, error) {
	e := &exporter{buf: bufio.NewWriter(w)}
	switch format {
	case FormatCSV:
		e.csv = safecsv.NewWriter(e.buf)
		if err := e.csv.Write(csvHeader); err != nil {
			return nil, fmt.Errorf("writing csv header: %w", err)
		}
	case FormatJSONL:
		e.enc = json.NewEncoder(e.buf)
		e.enc.SetEscapeHTML(false)
	default:
		return nil, apperr.Field("format", "must be csv or jsonl")
	}
	return e, nil
}

func (e *exporter) write(r *Record) error {
	if e.enc != nil {
		if err := e.enc.Encode(r); err != nil {
			return fmt.Errorf("writing record %d: %w", r.Seq, err)
		}
		return nil
	}
	uid := ""
	if r.UID != 0 {
		uid = strconv.FormatUint(uint64(r.UID), 10)
	}
	row := append(e.row[:0],
		strconv.FormatInt(r.Seq, 10), r.Time.Format(time.RFC3339Nano), r.RequestID,
		r.Issuer, r.Subject, r.Account, uid, strings.Join(r.Groups, " "),
		r.Service, r.Channel, r.Role,
		strconv.FormatInt(int64(r.RequestedTTL/time.Second), 10), strconv.FormatInt(int64(r.GrantedTTL/time.Second), 10),
		string(r.Decision), r.Reason, r.Rule, strconv.FormatInt(r.PolicyVersion, 10),
		r.ClientIP, r.UserAgent, r.TokenFingerprint, r.KeyID, r.PrevHash.String(), r.Hash.String(), r.TraceID,
		r.Project, r.AppID,
	)
	e.row = row
	if err := e.csv.Write(row); err != nil {
		return fmt.Errorf("writing record %d: %w", r.Seq, err)
	}
	return nil
}

// RecordWriter writes records in an export format as they come (the CSV
// header first): `broker audit tail -o csv` follows the log in the export's
// columns.
type RecordWriter struct{ e *exporter }

// NewRecordWriter returns a writer of format (FormatCSV or FormatJSONL) to w.
func NewRecordWriter(format string, w io.Writer) (*RecordWriter, error) {
	e, err := newExporter(format, w)
	if err != nil {
		return nil, err
	}
	return &RecordWriter{e}, nil
}

// Write writes recs and flushes them to the underlying writer.
func (rw *RecordWriter) Write(recs []Record) error {
	for i := range recs {
		if err := rw.e.write(&recs[i]); err != nil {
			return err
		}
	}
	return rw.e.flush()
}

func (e *exporter) flush() error {
	if e.csv != nil {
		if err := e.csv.Flush(); err != nil {
			return fmt.Errorf("writing csv: %w", err)
		}
	}
	if err := e.buf.Flush(); err != nil {
		return fmt.Errorf("writing export: %w", err)
	}
	return nil
}
