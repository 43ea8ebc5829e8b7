package load

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// answer is one response wrk completed in the accounting run.
type answer struct {
	Status    int
	RequestID string
}

// readAnswered reads the lines answered.lua wrote: "<status> <X-Request-Id>".
func readAnswered(path string) ([]answer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("answered requests: %w", err)
	}
	defer f.Close()
	var out []answer
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		status, id, ok := strings.Cut(sc.Text(), " ")
		code, err := strconv.Atoi(status)
		if !ok || err != nil || id == "" {
			return nil, fmt.Errorf("answered requests: %s line %d is not \"<status> <request id>\"", path, n)
		}
		out = append(out, answer{Status: code, RequestID: id})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("answered requests: read %s: %w", path, err)
	}
	return out, nil
}

// recordsPerAnswer is how many issuance-log rows a response with this status
// must have: one for every decision (granted 200, invalid 400, denied 403),
// none for anything that is not a decision (401 unauthenticated, 429 limited,
// 503 log unavailable: fail closed).
func recordsPerAnswer(status int) int {
	switch status {
	case 200, 400, 403:
		return 1
	}
	return 0
}

// accounting joins the answered requests of a run to the rows the run added
// to the issuance log, by request id.
type accounting struct {
	Answered   int         // responses wrk completed
	ByStatus   map[int]int // of which, by HTTP status
	Rows       int         // rows the run added
	Matched    int         // answered requests with exactly the rows their status calls for
	Wrong      []string    // answered requests without: "id status=… rows=…"
	Unanswered int         // rows whose request wrk never saw answered (cut off when the run ended)
}

// reconcile compares answers with rows (request id → number of rows).
func reconcile(answers []answer, rows map[string]int) accounting {
	a := accounting{Answered: len(answers), ByStatus: map[int]int{}}
	seen := map[string]bool{}
	for _, n := range rows {
		a.Rows += n
	}
	for _, ans := range answers {
		a.ByStatus[ans.Status]++
		got, want := rows[ans.RequestID], recordsPerAnswer(ans.Status)
		if seen[ans.RequestID] {
			a.Wrong = append(a.Wrong, fmt.Sprintf("%s status=%d answered twice", ans.RequestID, ans.Status))
			continue
		}
		seen[ans.RequestID] = true
		if got != want {
			a.Wrong = append(a.Wrong, fmt.Sprintf("%s status=%d rows=%d want %d", ans.RequestID, ans.Status, got, want))
			continue
		}
		a.Matched++
	}
	for id, n := range rows {
		if !seen[id] {
			a.Unanswered += n
		}
	}
	sort.Strings(a.Wrong)
	return a
}

func TestReconcile_OneRowPerAnsweredDecision(t *testing.T) {
	tests := []struct {
		name           string
		answers        []answer
		rows           map[string]int
		wantMatched    int
		wantWrong      []string
		wantUnanswered int
	}{
		{
			name:        "every grant and denial has its row",
			answers:     []answer{{200, "a"}, {200, "b"}, {403, "c"}},
			rows:        map[string]int{"a": 1, "b": 1, "c": 1},
			wantMatched: 3,
		},
		{
			name:           "rows of requests cut off at the end are unanswered, not errors",
			answers:        []answer{{200, "a"}},
			rows:           map[string]int{"a": 1, "x": 1, "y": 1},
			wantMatched:    1,
			wantUnanswered: 2,
		},
		{
			name:        "a grant without a row is wrong",
			answers:     []answer{{200, "a"}, {200, "b"}},
			rows:        map[string]int{"a": 1},
			wantMatched: 1,
			wantWrong:   []string{"b status=200 rows=0 want 1"},
		},
		{
			name:        "a grant with two rows is wrong",
			answers:     []answer{{200, "a"}},
			rows:        map[string]int{"a": 2},
			wantWrong:   []string{"a status=200 rows=2 want 1"},
			wantMatched: 0,
		},
		{
			name:        "a 503 must have no row: the log failed closed",
			answers:     []answer{{503, "a"}, {503, "b"}},
			rows:        map[string]int{"b": 1},
			wantMatched: 1,
			wantWrong:   []string{"b status=503 rows=1 want 0"},
		},
		{
			name:        "an id answered twice is wrong",
			answers:     []answer{{200, "a"}, {200, "a"}},
			rows:        map[string]int{"a": 1},
			wantMatched: 1,
			wantWrong:   []string{"a status=200 answered twice"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reconcile(tt.answers, tt.rows)
			if got.Matched != tt.wantMatched || got.Unanswered != tt.wantUnanswered ||
				strings.Join(got.Wrong, "\n") != strings.Join(tt.wantWrong, "\n") {
				t.Errorf("reconcile = matched %d, unanswered %d, wrong %q; want %d, %d, %q",
					got.Matched, got.Unanswered, got.Wrong, tt.wantMatched, tt.wantUnanswered, tt.wantWrong)
			}
		})
	}
}

func TestReadAnswered_ParsesLinesAndRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good"
	if err := os.WriteFile(good, []byte("200 abc\n403 def\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readAnswered(good)
	if err != nil || len(got) != 2 || got[0] != (answer{200, "abc"}) || got[1] != (answer{403, "def"}) {
		t.Fatalf("readAnswered = %v, %v", got, err)
	}
	bad := dir + "/bad"
	if err := os.WriteFile(bad, []byte("200 abc\nnonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readAnswered(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("readAnswered on garbage: %v, want an error naming line 2", err)
	}
}
