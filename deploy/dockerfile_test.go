package deploy

import (
	"bufio"
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line  int    // where it starts, 1-based
	stage int    // index of the FROM it belongs to
	cmd   string // upper-case keyword: FROM, RUN, COPY, …
	args  string
}

// parseDockerfile splits a Dockerfile into instructions. It knows just enough
// of the format for these checks: comments, line continuations, stages.
func parseDockerfile(t *testing.T, src []byte) []instruction {
	t.Helper()
	var (
		out     []instruction
		pending strings.Builder
		start   int
		stage   = -1
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment inside a continued instruction
		}
		if pending.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, instruction{line: start, stage: stage, cmd: cmd, args: strings.Join(strings.Fields(args), " ")})
		pending.Reset()
	}
	if pending.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued instruction (line %d)", start)
	}
	return out
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	ins := parseDockerfile(t, readFile(t, "Dockerfile"))
	if len(ins) == 0 || ins[0].cmd != "FROM" {
		t.Fatal("Dockerfile does not start with FROM")
	}
	return ins
}

func stage(ins []instruction, n int) []instruction {
	var out []instruction
	for _, in := range ins {
		if in.stage == n {
			out = append(out, in)
		}
	}
	return out
}

func TestParseDockerfile(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\nFROM a AS b\n\nRUN x \\\n  # note\n  y\nfrom c\nuser   me\n"
	got := parseDockerfile(t, []byte(src))
	want := []instruction{
		{line: 2, stage: 0, cmd: "FROM", args: "a AS b"},
		{line: 4, stage: 0, cmd: "RUN", args: "x y"},
		{line: 7, stage: 1, cmd: "FROM", args: "c"},
		{line: 8, stage: 1, cmd: "USER", args: "me"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseDockerfile = %+v, want %+v", got, want)
	}
}

var goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)

// pinned is an image digest: a base image is pinned by it, not by a tag alone.
var pinned = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestDockerfile_BuildsAStaticTrimmedBinaryWithTheModulesGo(t *testing.T) {
	ins := dockerfile(t)
	m := goDirective.FindSubmatch(readFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	wantFrom := "golang:" + string(m[1])
	from := strings.Fields(ins[0].args)[0]
	if tag, digest, _ := strings.Cut(from, "@"); tag != wantFrom || !pinned.MatchString(digest) {
		t.Errorf("builder stage FROM %s, want %s@sha256:<digest> (go.mod says go %s; pinned by digest)", from, wantFrom, m[1])
	}
	var build string
	for _, in := range stage(ins, 0) {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/broker"} {
		if !strings.Contains(build, want) {
			t.Errorf("builder's go build %q lacks %s", build, want)
		}
	}
}

func TestDockerfile_FinalStageIsDistrolessAndNonRoot(t *testing.T) {
	ins := dockerfile(t)
	final := stage(ins, ins[len(ins)-1].stage)
	if tag, digest, _ := strings.Cut(final[0].args, "@"); tag != "gcr.io/distroless/static-debian12:nonroot" || !pinned.MatchString(digest) {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot@sha256:<digest>", final[0].args)
	}
	user := ""
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "COPY", "ADD":
			if in.cmd == "ADD" || !strings.HasPrefix(in.args, "--from=") {
				t.Errorf("line %d: final stage takes %s %s from the build context; only the built binary belongs there", in.line, in.cmd, in.args)
			}
		case "ENTRYPOINT":
			if !strings.HasPrefix(in.args, `["`) {
				t.Errorf("line %d: ENTRYPOINT %s is shell form; the image has no shell", in.line, in.args)
			}
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		t.Errorf("final stage runs as %q, want a non-root USER such as nonroot", user)
	}
}

func TestDockerfile_BakesInNoSecret(t *testing.T) {
	for _, in := range dockerfile(t) {
		switch in.cmd {
		case "ENV", "ARG":
			for _, f := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(f, "=")
				if isSecretName(name) {
					t.Errorf("line %d: %s %s puts a secret into the image or its history", in.line, in.cmd, name)
				}
			}
		case "COPY", "ADD":
			for _, f := range strings.Fields(in.args) {
				if base := f[strings.LastIndex(f, "/")+1:]; strings.HasPrefix(base, ".env") || strings.HasSuffix(base, ".pem") || strings.HasSuffix(base, ".key") {
					t.Errorf("line %d: %s copies %s into the image", in.line, in.cmd, f)
				}
			}
		case "RUN":
			if strings.Contains(in.args, "--mount=type=secret") {
				continue
			}
			for _, f := range strings.Fields(in.args) {
				name, val, ok := strings.Cut(f, "=")
				if ok && val != "" && isSecretName(name) {
					t.Errorf("line %d: RUN sets %s, which lands in the image history", in.line, name)
				}
			}
		}
	}
}

func TestDockerignore_KeepsLocalSecretsOutOfTheBuildContext(t *testing.T) {
	var patterns []string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, ".dockerignore")))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, want := range []string{"**/.env", "**/.env.*", "**/*.pem", "**/*.key", ".git"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			t.Errorf(".dockerignore re-includes %s; keep the context a plain deny list", p)
		}
	}
}
