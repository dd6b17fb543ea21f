package roles

import (
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// embeddedRecipes are the recipes kubebake ships, as recipes.Load reads them.
func embeddedRecipes(t *testing.T) []*recipes.Recipe {
	t.Helper()
	var out []*recipes.Recipe
	for _, name := range recipes.EmbeddedNames() {
		r, err := recipes.Load(name)
		if err != nil {
			t.Fatalf("recipes.Load(%s): %v", name, err)
		}
		out = append(out, r)
	}
	return out
}

func init() {
	for _, name := range recipes.EmbeddedNames() {
		goldenCases = append(goldenCases, goldenCase{name, func(t *testing.T) *recipes.Recipe {
			r, err := recipes.Load(name)
			if err != nil {
				t.Fatalf("recipes.Load(%s): %v", name, err)
			}
			return r
		}})
	}
}

// TestEmbeddedRecipesLint: the embedded recipes render, and every unit lint accepts is one the
// layer can render (recipes.KnownUnits and the roles catalog agree).
func TestEmbeddedRecipesLint(t *testing.T) {
	for _, rt := range recipes.Setups {
		listable := map[string]bool{}
		for _, d := range recipes.Units(rt, true) {
			if d.Listable {
				listable[d.Name] = true
			}
		}
		for _, u := range recipes.KnownUnits(rt) {
			if !listable[u] {
				t.Errorf("recipes.KnownUnits(%s) has %s, which roles cannot render", rt, u)
			}
			delete(listable, u)
		}
		for u := range listable {
			t.Errorf("roles can render %s for runtime %s, but recipes.KnownUnits refuses it", u, rt)
		}
	}
	for _, r := range embeddedRecipes(t) {
		if _, err := Render(r, fakeLock(r)); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
}
