package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/broker-dev/broker/deploy/internal/composefile"
)

// service is what the harness runs for one compose service: its command and
// exactly the environment compose gives the container, with the paths of its
// secrets and bind mounts (/run/secrets/…, /etc/dex/…) replaced by real files.
type service struct {
	name    string
	command []string          // the container's command (the image's entrypoint is the harness's binary)
	env     map[string]string // variable → value, nothing inherited from the test
}

// envList is env as KEY=value, sorted, plus extra (the harness's overrides).
func (s service) envList(extra map[string]string) []string {
	var out []string
	for k, v := range s.env {
		if _, over := extra[k]; !over {
			out = append(out, k+"="+v)
		}
	}
	for k, v := range extra {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// loadServices loads root/file (a docker-compose.yml) with vars as its
// interpolation environment, as `docker compose up` would with a .env, and
// returns its services. Secrets are written under dir, one folder a service,
// readable by owner only.
func loadServices(root, file string, vars map[string]string, dir string) (map[string]service, error) {
	p, err := composefile.Load(root, filepath.Join(root, file), vars)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	out := map[string]service{}
	for name, sc := range p.Services {
		mounts := map[string]string{} // container path → host path
		for _, v := range sc.Volumes {
			if v.Type == types.VolumeTypeBind {
				mounts[v.Target] = v.Source
			}
		}
		for _, ref := range sc.Secrets {
			target := ref.Target
			if target == "" {
				target = ref.Source
			}
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			def, ok := p.Secrets[ref.Source]
			if !ok {
				return nil, fmt.Errorf("%s: service %s uses undefined secret %s", file, name, ref.Source)
			}
			value, err := secretValue(def, vars)
			if err != nil {
				return nil, fmt.Errorf("%s: secret %s: %w", file, ref.Source, err)
			}
			path := filepath.Join(dir, name, "secrets", filepath.Base(target))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, []byte(value), 0o400); err != nil {
				return nil, err
			}
			mounts[target] = path
		}
		s := service{name: name, env: map[string]string{}}
		for k, v := range sc.Environment {
			if v != nil {
				s.env[k] = realPath(*v, mounts)
			}
		}
		for _, arg := range sc.Command {
			s.command = append(s.command, realPath(arg, mounts))
		}
		out[name] = s
	}
	return out, nil
}

// secretValue is what compose would mount for a secret definition.
func secretValue(def types.SecretConfig, vars map[string]string) (string, error) {
	switch {
	case def.Environment != "":
		v, ok := vars[def.Environment]
		if !ok || v == "" {
			return "", fmt.Errorf("variable %s is not set", def.Environment)
		}
		return v, nil
	case def.Content != "":
		return def.Content, nil
	case def.File != "":
		b, err := os.ReadFile(def.File)
		return string(b), err
	}
	return "", fmt.Errorf("no source (environment, content or file)")
}

// realPath replaces a container path that lies in a mount with the host path.
func realPath(v string, mounts map[string]string) string {
	targets := make([]string, 0, len(mounts))
	for t := range mounts {
		targets = append(targets, t)
	}
	// Longest first: /run/secrets/x before /run/secrets.
	slices.SortFunc(targets, func(a, b string) int { return len(b) - len(a) })
	for _, t := range targets {
		if v == t {
			return mounts[t]
		}
		if rest, ok := strings.CutPrefix(v, t+"/"); ok {
			return filepath.Join(mounts[t], rest)
		}
	}
	return v
}
