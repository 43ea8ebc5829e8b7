package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/safecsv"
)

// policyBackend is where `broker policy` works: a broker's admin API as the
// logged-in user (apiPolicy), or the database (dbPolicy). project selects
// as the API's ?project= does: "" every rule, else that project's and "*".
// List reads the filter's search fields (SubjectLike, ChannelLike, Role,
// Effect, AppliesToChannel), Sort and Limit (0: every rule), as the API's
// GET /v1/policies does.
type policyBackend interface {
	List(ctx context.Context, f policy.Filter, project string) ([]policy.Rule, error)
	Add(ctx context.Context, r policy.Rule) (policy.Rule, error)
	Remove(ctx context.Context, id int64) error
	RemoveWhere(ctx context.Context, f policy.Filter, project string, confirmed *int) (int, error)
	Explain(ctx context.Context, caller policy.Caller, project, channel string, role policy.Role, at time.Time) (explanation, error)
	Who(ctx context.Context, project, channel string, role policy.Role) (policy.Holders, error)
	Import(ctx context.Context, csv io.Reader, o policy.ImportOptions) (importResult, error)
	Export(ctx context.Context, w io.Writer, format, project string) error
	History(ctx context.Context, f policy.HistoryFilter, project string) ([]policy.Change, error)
	Plan(ctx context.Context, doc []byte, project string, since time.Duration, progress io.Writer) (planResult, error)
	Apply(ctx context.Context, doc []byte, project string, expected int64) (applyResult, error)
}

// explanation is a decision with the rules that apply (POST
// /v1/policies/explain's answer).
type explanation struct {
	Project       string             `json:"project"`
	Allowed       bool               `json:"allowed"`
	Rule          *policy.Rule       `json:"rule"`
	MaxTTLSeconds int64              `json:"maxTtlSeconds"`
	Reason        string             `json:"reason"`
	Matches       []policy.RuleCheck `json:"matches"`
	Applicable    int                `json:"applicable"`
	Version       int64              `json:"version"`
	At            *time.Time         `json:"at,omitempty"`
}

// impactEntry is one (subject, channel, role) a plan turns around.
type impactEntry struct {
	Subject   string `json:"subject"`
	Channel   string `json:"channel"`
	Role      string `json:"role"`
	Decisions int64  `json:"decisions"`
}

// planResult is POST /v1/policies/plan's answer.
type planResult struct {
	Project         string      `json:"project"`
	ExpectedVersion int64       `json:"expectedVersion"`
	Since           time.Time   `json:"since"`
	Diff            policy.Diff `json:"diff"`
	Impact          struct {
		Lose          []impactEntry `json:"lose"`
		Gain          []impactEntry `json:"gain"`
		Decisions     int64         `json:"decisions"`
		Skipped       int64         `json:"skipped"`
		LoseDecisions int64         `json:"loseDecisions"`
		GainDecisions int64         `json:"gainDecisions"`
		Truncated     bool          `json:"truncated"`
	} `json:"impact"`
}

// importResult is POST /v1/policies/import's answer (its diff lists the
// first rules of each change through the API, all of them from the
// database).
type importResult struct {
	Mode      string `json:"mode"`
	DryRun    bool   `json:"dryRun"`
	Version   int64  `json:"version"`
	Added     int    `json:"added"`
	Removed   int    `json:"removed"`
	Unchanged int    `json:"unchanged"`
	Diff      struct {
		Added   []policy.Rule `json:"added"`
		Removed []policy.Rule `json:"removed"`
	} `json:"diff"`
}

// applyResult is POST /v1/policies/apply's answer.
type applyResult struct {
	Project string `json:"project"`
	Version int64  `json:"version"`
	Added   int    `json:"added"`
	Removed int    `json:"removed"`
}

// render writes v as JSON or YAML, else as the table, or the CSV rows
// (header first, every cell neutralised against spreadsheet formulas).
func render(w io.Writer, format string, v any, table func(io.Writer) error, csvRows func() [][]string) error {
	switch format {
	case "json":
		return writeJSON(w, v)
	case "yaml":
		// Through JSON, so that YAML has the API's field names.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var doc any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return enc.Close()
	case "csv":
		cw := safecsv.NewWriter(w)
		for _, row := range csvRows() {
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		return cw.Flush()
	}
	return table(w)
}

// projectsOf is the selection of ?project=: nil for every rule, else the
// project's rules and those of "*".
func projectsOf(p string) []string {
	switch p {
	case "":
		return nil
	case policy.AllProjects:
		return []string{p}
	default:
		return []string{p, policy.AllProjects}
	}
}

// dbPolicy works on the database: bootstrap and recovery.
type dbPolicy struct {
	engine *policy.Engine
	who    policy.Actor
}

func (d dbPolicy) List(ctx context.Context, f policy.Filter, project string) ([]policy.Rule, error) {
	f.Projects = projectsOf(project)
	rules, _, err := d.engine.Query(ctx, f)
	return rules, err
}

func (d dbPolicy) Add(ctx context.Context, r policy.Rule) (policy.Rule, error) {
	return d.engine.Add(ctx, d.who, r)
}

func (d dbPolicy) Remove(ctx context.Context, id int64) error { return d.engine.Remove(ctx, d.who, id) }

func (d dbPolicy) RemoveWhere(ctx context.Context, f policy.Filter, project string, confirmed *int) (int, error) {
	f.Projects = projectsOf(project)
	return d.engine.RemoveWhere(ctx, d.who, f, confirmed)
}

func (d dbPolicy) Explain(ctx context.Context, caller policy.Caller, project, channel string, role policy.Role, at time.Time) (explanation, error) {
	x, version, err := d.engine.ExplainAt(ctx, caller, project, channel, role, at)
	if err != nil {
		return explanation{}, err
	}
	out := explanation{Project: x.Project, Allowed: x.Decision.Allowed, Rule: x.Decision.Rule,
		MaxTTLSeconds: int64(x.Decision.MaxTTL / time.Second), Reason: x.Decision.Reason, Matches: x.Rules, Applicable: len(x.Rules), Version: version}
	if !at.IsZero() {
		out.At = &at
	}
	return out, nil
}

func (d dbPolicy) Who(_ context.Context, project, channel string, role policy.Role) (policy.Holders, error) {
	return d.engine.Who(project, channel, role)
}

func (d dbPolicy) Import(ctx context.Context, csv io.Reader, o policy.ImportOptions) (importResult, error) {
	res, err := d.engine.Import(ctx, d.who, csv, o)
	if err != nil {
		return importResult{}, err
	}
	out := importResult{Mode: string(res.Mode), DryRun: res.DryRun, Version: res.Version, Added: len(res.Added),
		Removed: len(res.Removed), Unchanged: res.Unchanged}
	out.Diff.Added, out.Diff.Removed = res.Added, res.Removed
	return out, nil
}

func (d dbPolicy) Export(ctx context.Context, w io.Writer, format, project string) error {
	if format == "csv" {
		return d.engine.Export(ctx, w, policy.Filter{Projects: projectsOf(project)})
	}
	rules, err := d.engine.List(ctx, policy.Filter{Projects: projectsOf(project)})
	if err != nil {
		return err
	}
	return policy.WriteDocument(w, rules)
}

func (d dbPolicy) History(ctx context.Context, f policy.HistoryFilter, project string) ([]policy.Change, error) {
	f.Projects = projectsOf(project)
	changes, _, err := d.engine.History(ctx, f)
	return changes, err
}

func (dbPolicy) Plan(context.Context, []byte, string, time.Duration, io.Writer) (planResult, error) {
	return planResult{}, usageError("policy plan: give --server: a plan's impact replays the issuance log as the broker decides (its issuers, its rights)")
}

func (d dbPolicy) Apply(ctx context.Context, doc []byte, project string, expected int64) (applyResult, error) {
	lines, err := policy.ReadDocument(bytes.NewReader(doc))
	if err != nil {
		return applyResult{}, err
	}
	rules := make([]policy.Rule, len(lines))
	for i, lr := range lines {
		rules[i] = lr.Rule
	}
	res, err := d.engine.Replace(ctx, d.who, project, rules, expected)
	if err != nil {
		return applyResult{}, err
	}
	return applyResult{Project: project, Version: res.Version, Added: len(res.Added), Removed: len(res.Removed)}, nil
}

// apiPolicy works through a broker's admin API.
type apiPolicy struct{ c *client.Client }

// maxPage is the API's largest page of rules.
const maxPage = 1000

func (a apiPolicy) List(ctx context.Context, f policy.Filter, project string) ([]policy.Rule, error) {
	q := url.Values{"limit": {strconv.Itoa(maxPage)}}
	setNonEmpty(q, "subject", f.SubjectLike, "channel", f.ChannelLike, "role", string(f.Role), "effect", string(f.Effect),
		"appliesTo", f.AppliesToChannel, "sort", f.Sort, "project", project)
	var all []policy.Rule
	for {
		var page struct {
			Rules      []policy.Rule `json:"rules"`
			NextCursor *string       `json:"nextCursor"`
		}
		if err := a.c.JSON(ctx, client.Request{Path: "/v1/policies", Query: q}, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Rules...)
		if f.Limit > 0 && len(all) >= f.Limit {
			return all[:f.Limit], nil
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			return all, nil
		}
		q.Set("cursor", *page.NextCursor)
	}
}

func (a apiPolicy) Add(ctx context.Context, r policy.Rule) (policy.Rule, error) {
	var out policy.Rule
	err := a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies"}, map[string]any{
		"subject": r.Subject, "channel": r.Channel, "role": r.Role, "effect": r.Effect, "maxTtlSeconds": r.MaxTTLSeconds, "project": r.Project,
	}, &out)
	return out, err
}

func (a apiPolicy) Remove(ctx context.Context, id int64) error {
	return a.c.JSON(ctx, client.Request{Method: http.MethodDelete, Path: "/v1/policies/" + strconv.FormatInt(id, 10)}, nil, nil)
}

func (a apiPolicy) RemoveWhere(ctx context.Context, f policy.Filter, project string, confirmed *int) (int, error) {
	var out struct {
		Removed int `json:"removed"`
	}
	err := a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies/remove"}, map[string]any{
		"filter": map[string]string{"subject": f.SubjectLike, "channel": f.ChannelLike, "role": string(f.Role), "effect": string(f.Effect),
			"appliesTo": f.AppliesToChannel, "project": project},
		"count": confirmed,
	}, &out)
	return out.Removed, err
}

func (a apiPolicy) Explain(ctx context.Context, caller policy.Caller, project, channel string, role policy.Role, at time.Time) (explanation, error) {
	var x explanation
	q := url.Values{"limit": {strconv.Itoa(maxPage)}}
	if !at.IsZero() {
		q.Set("at", at.UTC().Format(time.RFC3339Nano))
	}
	err := a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies/explain", Query: q}, map[string]any{
		"subject": "user:" + caller.Subject, "groups": caller.Groups, "channel": channel, "role": role, "project": project,
	}, &x)
	return x, err
}

func (a apiPolicy) Who(ctx context.Context, project, channel string, role policy.Role) (policy.Holders, error) {
	var h policy.Holders
	err := a.c.JSON(ctx, client.Request{Path: "/v1/policies/who",
		Query: url.Values{"project": {project}, "channel": {channel}, "role": {string(role)}}}, nil, &h)
	return h, err
}

func (a apiPolicy) Import(ctx context.Context, csv io.Reader, o policy.ImportOptions) (importResult, error) {
	body, err := io.ReadAll(csv)
	if err != nil {
		return importResult{}, err
	}
	q := url.Values{"dryRun": {strconv.FormatBool(o.DryRun)}}
	setNonEmpty(q, "mode", string(o.Mode), "project", o.Project)
	var out importResult
	err = a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies/import", Query: q, ContentType: "text/csv", Body: body}, nil, &out)
	return out, err
}

func (a apiPolicy) Export(ctx context.Context, w io.Writer, format, project string) error {
	q := url.Values{"format": {format}}
	setNonEmpty(q, "project", project)
	resp, err := a.c.Do(ctx, client.Request{Path: "/v1/policies/export", Query: q, Accept: "text/csv, application/yaml"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

func (a apiPolicy) History(ctx context.Context, f policy.HistoryFilter, project string) ([]policy.Change, error) {
	q := url.Values{}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Before != 0 {
		q.Set("before", strconv.FormatInt(f.Before, 10))
	}
	setNonEmpty(q, "project", project, "actor", f.Actor, "channel", f.Channel)
	var out struct {
		Changes []policy.Change `json:"changes"`
	}
	err := a.c.JSON(ctx, client.Request{Path: "/v1/policies/history", Query: q}, nil, &out)
	return out.Changes, err
}

// Plan asks for the plan as a stream (application/x-ndjson): progress
// lines, written to progress as they come, then the plan or a problem.
func (a apiPolicy) Plan(ctx context.Context, doc []byte, project string, since time.Duration, progress io.Writer) (planResult, error) {
	var p planResult
	resp, err := a.c.Do(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies/plan", ContentType: "application/yaml", Body: doc,
		Query: url.Values{"project": {project}, "since": {since.String()}}, Accept: ndjson})
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != ndjson {
		return p, json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&p)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var line struct {
			Progress *planProgress   `json:"progress"`
			Plan     *planResult     `json:"plan"`
			Problem  *client.Problem `json:"problem"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return p, fmt.Errorf("the plan's stream: %w", err)
		}
		switch {
		case line.Problem != nil:
			return p, line.Problem
		case line.Plan != nil:
			return *line.Plan, nil
		case line.Progress != nil:
			fmt.Fprintf(progress, "planning: %s, %d decisions replayed (%s)\n", line.Progress.Stage, line.Progress.Decisions,
				time.Duration(line.Progress.ElapsedMillis)*time.Millisecond)
		}
	}
	if err := sc.Err(); err != nil {
		return p, fmt.Errorf("the plan's stream: %w", err)
	}
	return p, fmt.Errorf("the plan's stream ended without a plan")
}

// ndjson is the media type of a streamed plan: one JSON object per line.
const ndjson = "application/x-ndjson"

// planProgress is a progress line of a streamed plan.
type planProgress struct {
	Stage         string `json:"stage"`
	Decisions     int64  `json:"decisions"`
	ElapsedMillis int64  `json:"elapsedMillis"`
}

func (a apiPolicy) Apply(ctx context.Context, doc []byte, project string, expected int64) (applyResult, error) {
	var out applyResult
	err := a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/policies/apply", ContentType: "application/yaml", Body: doc,
		Query: url.Values{"project": {project}, "expectedVersion": {strconv.FormatInt(expected, 10)}}}, nil, &out)
	return out, err
}

// setNonEmpty sets each (name, value) pair of kv whose value is not "".
func setNonEmpty(q url.Values, kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
}
