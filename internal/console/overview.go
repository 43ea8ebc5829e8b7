package console

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/broker-dev/broker/internal/audit"
)

// window is a time span the overview can show, and the width of its bars.
type window struct {
	Hours  int
	Bucket time.Duration
}

// windows are the spans the overview offers, each in about 24 bars.
var windows = []window{{6, 15 * time.Minute}, {24, time.Hour}, {72, 3 * time.Hour}, {168, 6 * time.Hour}}

// defaultWindow is the span shown unless another is asked for.
var defaultWindow = windows[1]

// windowLink is one choice of time span on the overview.
type windowLink struct {
	Label, URL string
	Current    bool
}

// overviewPage is the data of the console home.
type overviewPage struct {
	Hours                    int
	Windows                  []windowLink
	Chart                    *chart // nil without the api:audit read right
	Granted, Denied, Invalid int
	// The issuance log filtered to each kind of decision of the window.
	GrantedURL, DeniedURL, InvalidURL string
	// RateLimited counts the requests this replica refused for the rate
	// limit since it started; -1 when unknown.
	RateLimited int64
}

// overview serves GET /: decisions over the last hours as a server-rendered
// chart, for those who may read the issuance log; a plain welcome for those
// who may only manage policies; "no access" for everyone else.
func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	v := visitFrom(r.Context())
	if !v.rights.Any() {
		c.noAccess(w, r, "read on api:policies or api:audit")
		return
	}
	win := defaultWindow
	if h, err := strconv.Atoi(r.URL.Query().Get("hours")); err == nil {
		for _, x := range windows {
			if x.Hours == h {
				win = x
			}
		}
	}
	p := overviewPage{Hours: win.Hours, RateLimited: -1}
	if c.limited != nil {
		p.RateLimited = c.limited()
	}
	for _, x := range windows {
		label := strconv.Itoa(x.Hours) + " hours"
		if x.Hours%24 == 0 && x.Hours > 24 {
			label = strconv.Itoa(x.Hours/24) + " days"
		}
		p.Windows = append(p.Windows, windowLink{Label: label, URL: c.base + "/?hours=" + strconv.Itoa(x.Hours), Current: x == win})
	}
	if v.rights.Global {
		now := c.now().UTC()
		n := int(time.Duration(win.Hours) * time.Hour / win.Bucket)
		since := now.Truncate(win.Bucket).Add(-time.Duration(n-1) * win.Bucket)
		buckets, err := c.audit.Stats(r.Context(), since, win.Bucket)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, b := range buckets {
			p.Granted += b.Granted
			p.Denied += b.Denied
			p.Invalid += b.Invalid
		}
		filtered := func(decision string) string {
			return c.base + "/audit?" + url.Values{"decision": {decision}, "from": {since.Format(time.RFC3339)}}.Encode()
		}
		p.GrantedURL, p.DeniedURL, p.InvalidURL = filtered(string(audit.DecisionGranted)), filtered(string(audit.DecisionDenied)), filtered(string(audit.DecisionInvalid))
		p.Chart = newChart(buckets, win.Bucket)
	}
	c.render(w, r, http.StatusOK, "overview", c.view(r, "Overview", "overview", p))
}

// Chart geometry, in SVG user units.
const (
	chartWidth  = 760
	chartHeight = 260
	plotLeft    = 48
	plotRight   = chartWidth - 16
	plotTop     = 16
	plotBottom  = chartHeight - 40
)

// chart is a bar chart of granted and denied decisions per bucket, laid out
// here so the template only places shapes.
type chart struct {
	Width, Height                            int
	PlotLeft, PlotRight, PlotTop, PlotBottom int
	Bars                                     []bar
	YTicks, XTicks                           []tick
	Rows                                     []chartRow
	Summary                                  string
}

// bar is one rectangle; Class picks its colour in the stylesheet.
type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

// tick is an axis label at a position (Y for the value axis, X for time).
type tick struct {
	Pos   float64
	Label string
}

// chartRow is one bucket in the data table that accompanies the chart.
type chartRow struct {
	Label                    string
	Granted, Denied, Invalid int
}

func newChart(buckets []audit.Bucket, width time.Duration) *chart {
	ch := &chart{Width: chartWidth, Height: chartHeight, PlotLeft: plotLeft, PlotRight: plotRight, PlotTop: plotTop, PlotBottom: plotBottom}
	most := 0
	for _, b := range buckets {
		most = max(most, b.Granted, b.Denied, b.Invalid)
	}
	top := niceCeil(most)
	plotH := float64(plotBottom - plotTop)
	values := []int{0, top}
	if top%2 == 0 {
		values = []int{0, top / 2, top}
	}
	for _, v := range values {
		ch.YTicks = append(ch.YTicks, tick{Pos: round1(plotBottom - float64(v)/float64(top)*plotH), Label: strconv.Itoa(v)})
	}
	n := max(len(buckets), 1)
	group := float64(plotRight-plotLeft) / float64(n)
	barW := group * 0.26
	step := (n + 7) / 8 // at most about eight time labels
	layout := "Jan 2 15:04"
	var granted, denied, invalid int
	for i, b := range buckets {
		x := plotLeft + float64(i)*group
		span := fmt.Sprintf("%s–%s UTC", b.Start.UTC().Format(layout), b.Start.Add(width).UTC().Format("15:04"))
		for j, s := range []struct {
			count int
			class string
		}{{b.Granted, "granted"}, {b.Denied, "denied"}, {b.Invalid, "invalid"}} {
			h := float64(s.count) / float64(top) * plotH
			ch.Bars = append(ch.Bars, bar{
				X: round1(x + group*0.08 + float64(j)*(barW+group*0.03)), Y: round1(plotBottom - h),
				W: round1(barW), H: round1(h), Class: "bar-" + s.class,
				Title: fmt.Sprintf("%s: %d %s", span, s.count, s.class),
			})
		}
		if i%step == 0 {
			ch.XTicks = append(ch.XTicks, tick{Pos: round1(x + group/2), Label: b.Start.UTC().Format(layout)})
		}
		ch.Rows = append(ch.Rows, chartRow{Label: span, Granted: b.Granted, Denied: b.Denied, Invalid: b.Invalid})
		granted += b.Granted
		denied += b.Denied
		invalid += b.Invalid
	}
	ch.Summary = fmt.Sprintf("%d tokens granted, %d requests denied and %d invalid in %d intervals of %s.", granted, denied, invalid, len(buckets), width)
	return ch
}

// niceCeil returns the smallest of 1, 2, 5, 10, 20, 50, … that is at least n.
func niceCeil(n int) int {
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= n || p > math.MaxInt/100 {
				return m * p
			}
		}
	}
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
