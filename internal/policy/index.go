package policy

import (
	"bytes"
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// index answers channel decisions from per-subject buckets. It is built once
// per snapshot and never modified, so readers need no lock. Buckets are keyed
// by the bare user or group name, so a decision allocates no keys.
type index struct {
	users  map[string]*bucket // "user:<sub>" rules by sub
	groups map[string]*bucket // "group:<name>" rules by name
	star   *bucket            // "*" rules
}

// buckets calls f with each bucket that applies to c: its user's, its
// groups' (each once) and "*".
func (idx *index) buckets(c Caller, f func(*bucket)) {
	if b := idx.users[c.Subject]; b != nil {
		f(b)
	}
	for i, g := range c.Groups {
		if b := idx.groups[g]; b != nil && !containsString(c.Groups[:i], g) {
			f(b)
		}
	}
	if idx.star != nil {
		f(idx.star)
	}
}

// bucket holds the channel rules of one subject. It owns them (all, in id
// order); everything else points into all. Never modified once built.
type bucket struct {
	all          []Rule
	exact        map[string][]*Rule // rules on a plain channel name, by name
	exactDeny    []*Rule            // the deny rules among them, for pattern requests
	patterns     []*Rule            // rules on a pattern
	denyPatterns []*Rule            // the deny rules among them
	// With many patterns, each is indexed by its longer literal end: the text
	// before its first "*" (prefixes) or after its last (suffixes, stored
	// reversed); patterns with neither (like "*" or "*x*") stay in floating.
	prefixes, suffixes *trieNode
	floating           []*Rule
	// With many exact-name denies, a pattern request looks only at the names
	// that start with its literal prefix (denyNames, sorted by name), and
	// of those only at the ones whose profile holds every literal byte and
	// byte pair of the pattern, before matching.
	denyNames    []*Rule
	denyProfiles []nameProfile
}

// denyNameThreshold is the number of exact-name denies from which a bucket
// indexes them for pattern requests.
const denyNameThreshold = 64

// nameProfile summarises a channel name for a pattern request's quick
// rejection: how often each byte occurs (at most 255) and a 64-bit set of the
// byte pairs in it. A name a pattern matches holds every literal byte of
// the pattern as often, and every pair within its literal segments.
type nameProfile struct {
	counts [128]uint8
	pairs  uint64
}

func pairBit(a, b byte) uint64 { return 1 << ((uint(a)*31 + uint(b)) % 64) }

func profileOf(name string) nameProfile {
	var p nameProfile
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 128 && p.counts[c] < 255 {
			p.counts[c]++
		}
		if i > 0 {
			p.pairs |= pairBit(name[i-1], name[i])
		}
	}
	return p
}

// holds reports whether a name of profile p can match the pattern whose
// literal profile is need: every pair, and every byte as often.
func (p *nameProfile) holds(need *patternNeed) bool {
	if need.pairs&^p.pairs != 0 {
		return false
	}
	for _, c := range need.bytes[:need.n] {
		if need.counts[c] > p.counts[c] {
			return false
		}
	}
	return true
}

// patternNeed is a pattern's literal profile and its distinct bytes.
type patternNeed struct {
	nameProfile
	bytes [64]byte
	n     int
}

// literalProfile is the profile of a pattern's literal bytes, its pairs
// taken within the segments between stars.
func literalProfile(q string) patternNeed {
	var p patternNeed
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '*' || c >= 128 {
			continue
		}
		if p.counts[c] == 0 && p.n < len(p.bytes) {
			p.bytes[p.n] = c
			p.n++
		}
		if p.counts[c] < 255 {
			p.counts[c]++
		}
		if i > 0 && q[i-1] != '*' {
			p.pairs |= pairBit(q[i-1], c)
		}
	}
	return p
}

// trieThreshold is the number of patterns from which a bucket indexes them
// instead of trying each one.
const trieThreshold = 8

// trieNode is a node of a byte trie over pattern ends: rules holds the
// patterns whose indexed end is the path to this node. Children are found by
// scanning keys (one byte each), cheaper than a map at these fan-outs.
type trieNode struct {
	keys  []byte
	kids  []*trieNode
	rules []*Rule
}

func (n *trieNode) child(c byte) *trieNode {
	if i := bytes.IndexByte(n.keys, c); i >= 0 {
		return n.kids[i]
	}
	return nil
}

// insert adds r under key, read forwards or (reverse) backwards.
func (n *trieNode) insert(key string, reverse bool, r *Rule) {
	for i := range len(key) {
		c := key[i]
		if reverse {
			c = key[len(key)-1-i]
		}
		next := n.child(c)
		if next == nil {
			next = &trieNode{}
			n.keys = append(n.keys, c)
			n.kids = append(n.kids, next)
		}
		n = next
	}
	n.rules = append(n.rules, r)
}

// visit walks key (backwards when reverse) and considers, for channel, the
// rules on the way whose pattern covers channel. For a plain channel key is
// the channel itself; for a pattern, its literal end: a pattern can only
// cover another if its own literal end is a prefix (suffix) of the other's.
func (n *trieNode) visit(key string, reverse bool, channel string, v *verdict) {
	for i := 0; n != nil; i++ {
		considerCovering(n.rules, channel, v)
		if i == len(key) {
			return
		}
		c := key[i]
		if reverse {
			c = key[len(key)-1-i]
		}
		n = n.child(c)
	}
}

// considerCovering considers each of rules whose pattern covers channel.
func considerCovering(rules []*Rule, channel string, v *verdict) {
	for _, r := range rules {
		if covers(r.Channel, channel) {
			v.consider(r)
		}
	}
}

// projectIndex holds an index of the channel rules of each project that has
// any, under the project's name ("*" for the rules of every project). Like
// an index it is built once per snapshot and never modified.
type projectIndex map[string]*index

// newProjectIndex indexes the channel rules among rules (which must be
// valid and normalized) by project.
func newProjectIndex(rules []Rule) projectIndex {
	by := make(map[string][]Rule)
	for _, r := range rules {
		if !r.IsAdmin() && !r.IsLogin() {
			by[r.Project] = append(by[r.Project], r)
		}
	}
	ps := make(projectIndex, len(by))
	for p, rs := range by {
		ps[p] = newIndex(rs)
	}
	return ps
}

// patched returns a new projectIndex with res applied: only the indexes of
// the projects res touches are patched (index.patched). ps is not modified.
func (ps projectIndex) patched(res Applied) projectIndex {
	by := make(map[string]*Applied)
	for i, lines := range [][]Line{res.Removed, res.Added} {
		for _, l := range lines {
			if l.PType != ptypeChannel {
				continue
			}
			p := ruleFromLine(l).Project
			if by[p] == nil {
				by[p] = &Applied{}
			}
			if i == 0 {
				by[p].Removed = append(by[p].Removed, l)
			} else {
				by[p].Added = append(by[p].Added, l)
			}
		}
	}
	next := maps.Clone(ps)
	for p, a := range by {
		idx := ps[p]
		if idx == nil {
			idx = newIndex(nil)
		}
		next[p] = idx.patched(*a)
	}
	return next
}

// newIndex indexes rules, the channel rules of one project.
func newIndex(rules []Rule) *index {
	by := make(map[string][]Rule)
	for _, r := range rules {
		by[r.Subject] = append(by[r.Subject], r)
	}
	idx := &index{users: make(map[string]*bucket, len(by)), groups: make(map[string]*bucket)}
	for subject, rs := range by {
		idx.set(subject, buildBucket(rs))
	}
	return idx
}

// patched returns a new index with res applied: the maps are copied, and
// only the buckets of the subjects res touches are rebuilt, so a change costs
// the size of those buckets, not of the whole rule set. idx is not modified.
func (idx *index) patched(res Applied) *index {
	next := &index{users: maps.Clone(idx.users), groups: maps.Clone(idx.groups), star: idx.star}
	removed := make(map[int64]bool, len(res.Removed))
	touched := make(map[string][]Rule)
	for _, l := range res.Removed {
		if l.PType == ptypeChannel {
			removed[l.ID] = true
			touched[l.V[0]] = nil
		}
	}
	for _, l := range res.Added {
		if l.PType == ptypeChannel {
			removed[l.ID] = true // replaces a copy from a change applied before (see patched)
			touched[l.V[0]] = append(touched[l.V[0]], ruleFromLine(l))
		}
	}
	for subject, added := range touched {
		var rs []Rule
		if b := idx.bucketOf(subject); b != nil {
			for _, r := range b.all {
				if !removed[r.ID] {
					rs = append(rs, r)
				}
			}
		}
		rs = append(rs, added...)
		slices.SortFunc(rs, func(a, b Rule) int { return cmp.Compare(a.ID, b.ID) })
		if len(rs) == 0 {
			next.set(subject, nil)
			continue
		}
		next.set(subject, buildBucket(rs))
	}
	return next
}

// bucketOf returns the bucket of a rule subject, or nil.
func (idx *index) bucketOf(subject string) *bucket {
	switch {
	case subject == "*":
		return idx.star
	case strings.HasPrefix(subject, "user:"):
		return idx.users[subject[len("user:"):]]
	}
	return idx.groups[strings.TrimPrefix(subject, "group:")]
}

// set puts b (nil: none) as the bucket of a rule subject.
func (idx *index) set(subject string, b *bucket) {
	m, key := idx.groups, strings.TrimPrefix(subject, "group:")
	switch {
	case subject == "*":
		idx.star = b
		return
	case strings.HasPrefix(subject, "user:"):
		m, key = idx.users, subject[len("user:"):]
	}
	if b == nil {
		delete(m, key)
		return
	}
	m[key] = b
}

// buildBucket indexes the channel rules of one subject (in id order); the
// bucket keeps rs as its own.
func buildBucket(rs []Rule) *bucket {
	b := &bucket{exact: make(map[string][]*Rule), all: rs}
	for i := range b.all {
		r := &b.all[i]
		if isPattern(r.Channel) {
			b.patterns = append(b.patterns, r)
			if r.Effect == Deny {
				b.denyPatterns = append(b.denyPatterns, r)
			}
			continue
		}
		b.exact[r.Channel] = append(b.exact[r.Channel], r)
		if r.Effect == Deny {
			b.exactDeny = append(b.exactDeny, r)
		}
	}
	if len(b.exactDeny) >= denyNameThreshold {
		b.denyNames = slices.Clone(b.exactDeny)
		slices.SortFunc(b.denyNames, func(x, y *Rule) int { return cmp.Or(strings.Compare(x.Channel, y.Channel), cmp.Compare(x.ID, y.ID)) })
		b.denyProfiles = make([]nameProfile, len(b.denyNames))
		for i, r := range b.denyNames {
			b.denyProfiles[i] = profileOf(r.Channel)
		}
	}
	if len(b.patterns) >= trieThreshold {
		b.prefixes, b.suffixes = &trieNode{}, &trieNode{}
		for _, r := range b.patterns {
			first, last := strings.IndexByte(r.Channel, '*'), strings.LastIndexByte(r.Channel, '*')
			prefix, suffix := r.Channel[:first], r.Channel[last+1:]
			switch {
			case prefix == "" && suffix == "":
				b.floating = append(b.floating, r)
			case len(prefix) >= len(suffix):
				b.prefixes.insert(prefix, false, r)
			default:
				b.suffixes.insert(suffix, true, r)
			}
		}
	}
	return b
}

// verdict accumulates the rules that match one request.
type verdict struct {
	role  Role
	deny  *Rule // lowest-id matching deny
	allow *Rule // matching allow with the longest lifetime, then lowest id
}

// roleApplies reports whether r's role takes part in a request for role:
// publisher includes subscriber, so an allow on publisher also allows
// subscriber and a deny on subscriber also denies publisher.
func roleApplies(r *Rule, role Role) bool {
	if r.Role == role {
		return true
	}
	if r.Effect == Allow {
		return r.Role == Publisher
	}
	return r.Role == Subscriber
}

// consider records r, whose channel is already known to match.
func (v *verdict) consider(r *Rule) {
	if !roleApplies(r, v.role) {
		return
	}
	if r.Effect == Deny {
		if v.deny == nil || r.ID < v.deny.ID {
			v.deny = r
		}
		return
	}
	if v.allow == nil || longerTTL(r, v.allow) {
		v.allow = r
	}
}

// longerTTL reports whether a grants a longer lifetime than b (no limit is
// longest), ties going to the lower id.
func longerTTL(a, b *Rule) bool {
	ta, tb := ttlRank(a), ttlRank(b)
	if ta != tb {
		return ta > tb
	}
	return a.ID < b.ID
}

func ttlRank(r *Rule) int {
	if r.MaxTTLSeconds == 0 {
		return MaxTTLSecondsLimit + 1
	}
	return r.MaxTTLSeconds
}

// decide evaluates a request of caller in project for channel (a name or a
// pattern) and role, on the rules of project and the "*" rules together. It
// is the hot path: no closures, no allocations.
func (ps projectIndex) decide(caller Caller, project, channel string, role Role) verdict {
	v := verdict{role: role}
	pattern := isPattern(channel)
	if idx := ps[project]; idx != nil {
		idx.decide(caller, channel, pattern, &v)
	}
	if idx := ps[AllProjects]; idx != nil && project != AllProjects {
		idx.decide(caller, channel, pattern, &v)
	}
	return v
}

// decide adds to v the rules of idx that match a request of caller.
func (idx *index) decide(caller Caller, channel string, pattern bool, v *verdict) {
	if b := idx.users[caller.Subject]; b != nil {
		b.decide(channel, pattern, v)
	}
	for i, g := range caller.Groups {
		if b := idx.groups[g]; b != nil && !containsString(caller.Groups[:i], g) {
			b.decide(channel, pattern, v)
		}
	}
	if idx.star != nil {
		idx.star.decide(channel, pattern, v)
	}
}

// decide considers the bucket's rules that match channel.
func (b *bucket) decide(channel string, pattern bool, v *verdict) {
	if pattern {
		b.decidePattern(channel, v)
		return
	}
	for _, r := range b.exact[channel] {
		v.consider(r)
	}
	if b.prefixes == nil {
		considerCovering(b.patterns, channel, v)
		return
	}
	b.prefixes.visit(channel, false, channel, v)
	b.suffixes.visit(channel, true, channel, v)
	considerCovering(b.floating, channel, v)
}

// decidePattern evaluates a pattern request against the bucket: allows must
// cover it, denies need only overlap it. A plain-name allow never covers a
// pattern, which stands for infinitely many names.
func (b *bucket) decidePattern(q string, v *verdict) {
	if b.denyNames == nil {
		for _, r := range b.exactDeny {
			if covers(q, r.Channel) {
				v.consider(r)
			}
		}
	} else {
		prefix := q[:strings.IndexByte(q, '*')]
		need := literalProfile(q)
		i, _ := slices.BinarySearchFunc(b.denyNames, prefix, func(r *Rule, p string) int { return strings.Compare(r.Channel, p) })
		for ; i < len(b.denyNames) && strings.HasPrefix(b.denyNames[i].Channel, prefix); i++ {
			if b.denyProfiles[i].holds(&need) && covers(q, b.denyNames[i].Channel) {
				v.consider(b.denyNames[i])
			}
		}
	}
	for _, r := range b.denyPatterns {
		if overlaps(r.Channel, q) {
			v.consider(r)
		}
	}
	// Allows (a deny found here also overlaps, so considering it is harmless).
	if b.prefixes == nil {
		considerCovering(b.patterns, q, v)
		return
	}
	first, last := strings.IndexByte(q, '*'), strings.LastIndexByte(q, '*')
	b.prefixes.visit(q[:first], false, q, v)
	b.suffixes.visit(q[last+1:], true, q, v)
	considerCovering(b.floating, q, v)
}

// applicable returns every channel rule that applies to caller in project
// (its own and the "*" rules), in id order.
func (ps projectIndex) applicable(caller Caller, project string) []*Rule {
	var out []*Rule
	scopes := []string{project}
	if project != AllProjects {
		scopes = append(scopes, AllProjects)
	}
	for _, p := range scopes {
		idx := ps[p]
		if idx == nil {
			continue
		}
		idx.buckets(caller, func(b *bucket) {
			for _, rs := range b.exact {
				out = append(out, rs...)
			}
			out = append(out, b.patterns...)
		})
	}
	slices.SortFunc(out, func(a, b *Rule) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// decision turns a verdict into a Decision for who; its reason is built in
// one allocation, as this runs for every request.
func (v verdict) decision(who, channel string) Decision {
	buf := make([]byte, 0, 128)
	switch {
	case v.deny != nil:
		r := *v.deny
		return Decision{Rule: &r, Reason: string(r.appendTo(append(buf, "denied by rule "...)))}
	case v.allow != nil:
		r := *v.allow
		return Decision{Allowed: true, Rule: &r, MaxTTL: r.MaxTTL(), Reason: string(r.appendTo(append(buf, "allowed by rule "...)))}
	}
	buf = append(buf, "no rule allows "...)
	buf = append(buf, who...)
	buf = append(buf, " to be "...)
	buf = append(buf, v.role...)
	buf = append(buf, " on "...)
	return Decision{Reason: string(strconv.AppendQuote(buf, channel))}
}
