package policy

import (
	"cmp"
	"fmt"
	"slices"
)

// index answers channel decisions from per-subject buckets. It is built once
// per snapshot and never modified, so readers need no lock.
type index struct {
	buckets map[string]*bucket // by rule subject: "user:…", "group:…", "*"
}

// bucket holds the channel rules of one subject.
type bucket struct {
	exact     map[string][]*Rule // rules on a plain channel name, by name
	exactDeny []*Rule            // the deny rules among them, for pattern requests
	patterns  []*Rule            // rules on a pattern
	trie      *trieNode          // patterns by literal prefix, when there are many
}

// trieThreshold is the number of patterns from which a bucket indexes them by
// literal prefix instead of trying each one.
const trieThreshold = 8

// trieNode is a node of a byte trie over pattern prefixes: rules holds the
// patterns whose literal prefix (text before the first "*") ends here.
type trieNode struct {
	children map[byte]*trieNode
	rules    []*Rule
}

// newIndex indexes the channel rules among rules (which must be valid).
func newIndex(rules []Rule) *index {
	idx := &index{buckets: make(map[string]*bucket)}
	for i := range rules {
		r := &rules[i]
		if r.IsAdmin() {
			continue
		}
		b := idx.buckets[r.Subject]
		if b == nil {
			b = &bucket{exact: make(map[string][]*Rule)}
			idx.buckets[r.Subject] = b
		}
		if IsPattern(r.Channel) {
			b.patterns = append(b.patterns, r)
			continue
		}
		b.exact[r.Channel] = append(b.exact[r.Channel], r)
		if r.Effect == Deny {
			b.exactDeny = append(b.exactDeny, r)
		}
	}
	for _, b := range idx.buckets {
		if len(b.patterns) < trieThreshold {
			continue
		}
		b.trie = &trieNode{}
		for _, r := range b.patterns {
			n := b.trie
			for _, c := range []byte(literalPrefix(r.Channel)) {
				child := n.children[c]
				if child == nil {
					if n.children == nil {
						n.children = make(map[byte]*trieNode)
					}
					child = &trieNode{}
					n.children[c] = child
				}
				n = child
			}
			n.rules = append(n.rules, r)
		}
	}
	return idx
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

// decide evaluates a request for channel (a name or a pattern) and role by
// the rules of subjects.
func (idx *index) decide(subjects []string, channel string, role Role) verdict {
	v := verdict{role: role}
	pattern := IsPattern(channel)
	for _, s := range subjects {
		b := idx.buckets[s]
		if b == nil {
			continue
		}
		if pattern {
			b.decidePattern(channel, &v)
			continue
		}
		for _, r := range b.exact[channel] {
			v.consider(r)
		}
		if b.trie == nil {
			for _, r := range b.patterns {
				if covers(r.Channel, channel) {
					v.consider(r)
				}
			}
			continue
		}
		n := b.trie
		for i := 0; n != nil; i++ {
			for _, r := range n.rules {
				if covers(r.Channel, channel) {
					v.consider(r)
				}
			}
			if i == len(channel) {
				break
			}
			n = n.children[channel[i]]
		}
	}
	return v
}

// decidePattern evaluates a pattern request against the bucket: allows must
// cover it, denies need only overlap it. A plain-name allow never covers a
// pattern, which stands for infinitely many names.
func (b *bucket) decidePattern(q string, v *verdict) {
	for _, r := range b.exactDeny {
		if covers(q, r.Channel) {
			v.consider(r)
		}
	}
	for _, r := range b.patterns {
		if r.Effect == Deny && overlaps(r.Channel, q) || r.Effect == Allow && covers(r.Channel, q) {
			v.consider(r)
		}
	}
}

// applicable returns every channel rule of subjects, in id order.
func (idx *index) applicable(subjects []string) []*Rule {
	var out []*Rule
	for _, s := range subjects {
		b := idx.buckets[s]
		if b == nil {
			continue
		}
		for _, rs := range b.exact {
			out = append(out, rs...)
		}
		out = append(out, b.patterns...)
	}
	slices.SortFunc(out, func(a, b *Rule) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// decision turns a verdict into a Decision for who.
func (v verdict) decision(who, channel string) Decision {
	switch {
	case v.deny != nil:
		r := *v.deny
		return Decision{Rule: &r, Reason: fmt.Sprintf("denied by rule %s", r)}
	case v.allow != nil:
		r := *v.allow
		return Decision{Allowed: true, Rule: &r, MaxTTL: r.MaxTTL(), Reason: fmt.Sprintf("allowed by rule %s", r)}
	}
	return Decision{Reason: fmt.Sprintf("no rule allows %s to be %s on %q", who, v.role, channel)}
}
