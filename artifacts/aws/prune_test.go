package aws

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	// Seven AMIs of recipe r1, one a day, newest first: ids[0] is a day old.
	ids := make([]string, 7)
	snaps := make([]string, 7)
	for i := range ids {
		ids[i], snaps[i] = srv.AddImage(home, fmt.Sprintf("r1-%d", i), now.Add(-time.Duration(i+1)*24*time.Hour), map[string]string{TagRecipe: "r1"})
	}
	other, _ := srv.AddImage(home, "r2-old", now.Add(-100*24*time.Hour), map[string]string{TagRecipe: "r2"})
	srv.AddInstance(home, ids[4], "stopped")
	srv.AddInstance(home, ids[3], "terminated") // a terminated instance uses nothing
	srv.AddInstance(home, ids[2], "running")
	srv.AddLaunchTemplate(home, "workers", ids[0], ids[5]) // version 2 names ids[5]

	actions := func(res *PruneResult) map[string]string {
		m := map[string]string{}
		for _, p := range res.Images {
			m[p.ImageID] = p.Action
		}
		return m
	}
	exists := func(id string) bool {
		for _, im := range srv.Images(home) {
			if im.ID == id {
				return true
			}
		}
		return false
	}

	// Dry run: says what it would remove, removes nothing.
	res, err := s.Prune(context.Background(), "", PruneRequest{Recipe: "r1", Keep: 2, DryRun: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	got := actions(res)
	want := map[string]string{ids[0]: ActionKept, ids[1]: ActionKept, ids[2]: ActionKept, ids[3]: ActionWouldRemove,
		ids[4]: ActionKept, ids[5]: ActionKept, ids[6]: ActionWouldRemove}
	for id, a := range want {
		if got[id] != a {
			t.Errorf("dry run: %s %q, want %q", id, got[id], a)
		}
	}
	if len(res.Images) != 7 || res.Images[0].ImageID != ids[0] || res.Images[6].ImageID != ids[6] {
		t.Errorf("images not newest first: %+v", res.Images)
	}
	for _, p := range res.Images {
		switch p.ImageID {
		case ids[2], ids[4]:
			if !strings.Contains(p.Reason, "in use: instance i-") {
				t.Errorf("%s kept because %q", p.ImageID, p.Reason)
			}
		case ids[5]:
			if !strings.Contains(p.Reason, "launch template workers") || !strings.Contains(p.Reason, "version 2") {
				t.Errorf("%s kept because %q", p.ImageID, p.Reason)
			}
		}
	}
	if srv.Calls("ec2:DeregisterImage") != 0 || srv.Calls("ec2:DeleteSnapshot") != 0 {
		t.Fatal("a dry run removed something")
	}

	// --older-than 6.5 days keeps ids[3] (4 days old) and removes ids[6] (7 days old).
	res, err = s.Prune(context.Background(), "", PruneRequest{Recipe: "r1", Keep: 2, OlderThan: 156 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(res); got[ids[6]] != ActionRemoved || got[ids[3]] != ActionKept {
		t.Errorf("older-than: %v", got)
	}
	if exists(ids[6]) || !exists(ids[3]) {
		t.Error("older-than removed the wrong images")
	}
	for _, sn := range srv.Snapshots(home) {
		if sn.ID == snaps[6] {
			t.Errorf("the removed AMI's snapshot %s is still there", sn.ID)
		}
	}

	// Keep 1: everything else not in use goes; the in-use ones and the other recipe stay.
	res, err = s.Prune(context.Background(), "", PruneRequest{Recipe: "r1", Keep: 1, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i, keep := range []bool{true, false, true, false, true, true} {
		if exists(ids[i]) != keep {
			t.Errorf("after keep 1: %s (%d days old) exists=%v, want %v", ids[i], i+1, !keep, keep)
		}
	}
	if !exists(other) {
		t.Error("prune removed another recipe's AMI")
	}
	left := map[string]bool{}
	for _, sn := range srv.Snapshots(home) {
		left[sn.ID] = true
	}
	if left[snaps[1]] || left[snaps[3]] || !left[snaps[2]] || !left[snaps[0]] {
		t.Errorf("snapshots left: %v", left)
	}
}

func TestPruneRefuses(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	for _, c := range []struct {
		req  PruneRequest
		want string
	}{
		{PruneRequest{Recipe: "r1", Keep: 0}, "--keep"},
		{PruneRequest{Keep: 1}, "--recipe"},
		{PruneRequest{Recipe: "r1", Keep: 1, OlderThan: -time.Hour}, "--older-than"},
	} {
		if _, err := s.Prune(context.Background(), "", c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v", c.req, err)
		}
	}
}
