// Package composefile loads a docker-compose.yml as `docker compose` does, for
// the deployment checks and the cluster test: one loader, one set of rules.
package composefile

import (
	"context"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// Load reads file with schema validation (unknown keys are errors) and the
// consistency checks on, relative paths resolved against workingDir, and
// variables interpolated from env only: never from the process environment
// or a .env file, so that what the caller passes is all the file sees.
func Load(workingDir, file string, env map[string]string) (*types.Project, error) {
	details := types.ConfigDetails{
		WorkingDir:  workingDir,
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		Environment: env,
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SkipValidation = false
		o.SkipConsistencyCheck = false
		o.SkipInterpolation = false
	})
}
