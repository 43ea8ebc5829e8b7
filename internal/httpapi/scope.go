package httpapi

import (
	"net/http"
	"slices"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// Admin rights are held per project (package policy): a route checks that
// the caller holds its right somewhere (require), and the handler then
// limits what it reads to the projects where the caller holds it (scope).

// require lets a request through only if the caller holds action on object,
// or on one of the other objects, in some project (or globally).
func require(p *policy.Engine, object string, action policy.Role, or ...string) func(http.Handler) http.Handler {
	objects := append([]string{object}, or...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, ok := caller(r)
			for _, o := range objects {
				if ok && len(p.ProjectsWith(c, o, action)) > 0 {
					next.ServeHTTP(w, r)
					return
				}
			}
			problem.Write(w, r, apperr.New(apperr.Forbidden, "you need the %s right on %s", action, joinOr(objects)))
		})
	}
}

func joinOr(s []string) string {
	out := s[0]
	for _, v := range s[1:] {
		out += " or " + v
	}
	return out
}

// scope returns the projects whose data the caller may read with action on
// object: nil for all (a global right), else the projects the caller's
// rights name. With project set (the request's ?project=), just that one,
// or a Forbidden error when the right does not cover it; the error says
// nothing of the project's data.
func scope(p *policy.Engine, r *http.Request, object string, action policy.Role, project string) ([]string, error) {
	c, _, _ := caller(r)
	if project != "" {
		if project != policy.AllProjects && policy.CheckProjectName(project) != nil {
			return nil, apperr.Field("project", `must be "*" or a project name`)
		}
		if !p.Can(c, project, object, action) {
			return nil, apperr.New(apperr.Forbidden, "you need the %s right on %s in project %q", action, object, project)
		}
		return []string{project}, nil
	}
	projects := p.ProjectsWith(c, object, action)
	if slices.Contains(projects, policy.AllProjects) {
		return nil, nil
	}
	if len(projects) == 0 {
		return nil, apperr.New(apperr.Forbidden, "you need the %s right on %s", action, object)
	}
	return projects, nil
}

// ruleScope is scope for reading rules: a project's readers also see the
// rules of "*", which apply in their project too. A request for the rules
// of "*" alone is one any project's reader may make.
func ruleScope(p *policy.Engine, r *http.Request, project string) ([]string, error) {
	if project == policy.AllProjects {
		if _, err := scope(p, r, policy.ObjectPolicies, policy.Read, ""); err != nil {
			return nil, err
		}
		return []string{policy.AllProjects}, nil
	}
	projects, err := scope(p, r, policy.ObjectPolicies, policy.Read, project)
	if err != nil || projects == nil {
		return projects, err
	}
	return append(projects, policy.AllProjects), nil
}
