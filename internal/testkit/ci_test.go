package testkit

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestInCI(t *testing.T) {
	tests := []struct {
		value string
		want  bool
	}{
		{"", false},
		{"false", false},
		{"0", false},
		{"true", true},
		{"1", true},
		{"yes", true},
		{"TRUE", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("CI=%q", tt.value), func(t *testing.T) {
			t.Setenv("CI", tt.value)
			if got := InCI(); got != tt.want {
				t.Errorf("InCI() = %v, want %v", got, tt.want)
			}
		})
	}
}

// recordingTB records how a test would have ended instead of ending it.
// Only the methods Missing calls are implemented.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()                        {}
func (r *recordingTB) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recordingTB) Skipf(format string, a ...any)  { r.skip = fmt.Sprintf(format, a...) }

func TestMissingFailsInCIAndSkipsElsewhere(t *testing.T) {
	for _, ci := range []string{"true", "1", "yes", "", "false", "0"} {
		t.Run(fmt.Sprintf("CI=%q", ci), func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recordingTB{}
			Missing(r, "Redis at %s does not answer", "127.0.0.1:1")
			got, other := r.skip, r.fatal
			if InCI() {
				got, other = r.fatal, r.skip
			}
			if !strings.HasPrefix(got, MissingPrefix+"Redis at 127.0.0.1:1 does not answer") || other != "" {
				t.Errorf("fatal %q, skip %q", r.fatal, r.skip)
			}
		})
	}
}

// TestOneCIRule: no test decides by itself whether it runs in CI; every
// module goes through InCI, so CI=1 and CI=yes run what CI=true runs.
func TestOneCIRule(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	self, err := filepath.Abs("ci.go")
	if err != nil {
		t.Fatal(err)
	}
	direct := regexp.MustCompile(`(Getenv|LookupEnv)\("CI"\)`)
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || path == self {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		rel, _ := filepath.Rel(root, path)
		if direct.Match(b) {
			t.Errorf("%s reads CI itself: use testkit.InCI or testkit.Missing", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d Go files under %s: wrong root?", checked, root)
	}
}
