package roles

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.txt from the rendered layers")

type goldenCase struct {
	name   string
	recipe func(t *testing.T) *recipes.Recipe
}

// goldenCases are the layers kept in testdata/golden: the embedded recipes and a docker
// variant (embedded_test.go).
var goldenCases []goldenCase

func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			r := c.recipe(t)
			got := describe(mustRender(t, r, fakeLock(r)))
			path := filepath.Join("testdata", "golden", c.name+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./roles -run TestGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("layer differs from %s (run go test ./roles -run TestGolden -update and review the diff):\n%s", path, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff shows the first differing lines of two texts.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out = append(out, "line "+itoa(i+1)+":\n  want: "+a+"\n  got:  "+b)
			if len(out) == 5 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
