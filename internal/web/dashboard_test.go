package web_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/isobar-mq/isobar/internal/testutil"
	"github.com/isobar-mq/isobar/internal/testutil/peer"
)

// findChromium returns the path of a Chromium-compatible browser, or "".
func findChromium() string {
	if p := os.Getenv("ISOBAR_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is where screenshots go: $ISOBAR_ARTIFACTS/dashboard when
// set (kept after the test), else a temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("ISOBAR_ARTIFACTS"); d != "" {
		d = filepath.Join(d, "dashboard")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestDashboard drives the console in headless Chromium: sign in, see a
// connected client, kick it (the client sees the disconnect), publish a
// message from the form that a subscriber receives; once the node is
// clustered (a fake cluster), see its members and drain it; sign in as a
// read-only user, who sees the Cluster page without the drain button.
func TestDashboard(t *testing.T) {
	browser := findChromium()
	peer.Need(t, browser != "", "no Chromium found (install the Debian package \"chromium\" or set ISOBAR_CHROMIUM); dashboard test skipped")
	e := startRoles(t) // admin, and the read-only "reader"
	shots := artifactDir(t)

	lost := make(chan struct{}, 1)
	mqttClient(t, e.mqtt, "sensor-kitchen-01", "alice", true, func() { lost <- struct{}{} })
	watcher := mqttClient(t, e.mqtt, "watcher", "ops", true, nil)
	got := make(chan mqtt.Message, 4)
	waitTok(t, watcher.Subscribe("dash/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }))
	for i, topic := range []string{"home/kitchen/temperature", "home/hall/humidity", "devices/42/status"} {
		waitTok(t, watcher.Publish(topic, 1, true, fmt.Sprintf(`{"value": %d.5, "unit": "C"}`, 20+i)))
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // runs as root in CI
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// No UserDataDir: chromedp makes a fresh temporary profile and
		// removes it when the allocator is cancelled.
		chromedp.WindowSize(1440, 960),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 120*time.Second)
	defer tcancel()

	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			p := filepath.Join(shots, name+".png")
			t.Logf("screenshot %s", p)
			return os.WriteFile(p, buf, 0o644)
		})
	}
	// nav opens a page of the console the way a user does: the sidebar.
	nav := func(view string) chromedp.Action {
		return chromedp.Click(`#nav a[data-view="`+view+`"]`, chromedp.ByQuery)
	}
	// run runs one step with its own deadline; on failure it saves a
	// screenshot of the page as it was.
	run := func(what string, actions ...chromedp.Action) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		if err := chromedp.Run(sctx, actions...); err != nil {
			name := "failed-" + strings.ReplaceAll(what, " ", "-")
			if serr := chromedp.Run(ctx, shot(name)); serr != nil {
				t.Logf("no failure screenshot: %v", serr)
			}
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Start the browser on the long-lived context: the first Run on a
	// chromedp context owns the browser, and steps run on sub-contexts.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	run("login page",
		chromedp.Navigate(e.base+"/"),
		chromedp.WaitVisible("#login-username", chromedp.ByID),
		shot("01-login"))
	run("wrong password",
		chromedp.SendKeys("#login-username", adminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", "not the password", chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#login-error", chromedp.ByID))
	login := []chromedp.Action{
		chromedp.Evaluate(`document.querySelector("#login-username").value = ""; document.querySelector("#login-password").value = ""`, nil),
		chromedp.SendKeys("#login-username", adminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", adminPass, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#st-conn", chromedp.ByID),
	}
	// On a loaded machine headless Chromium occasionally misses the click
	// (seen about once in 20 runs, never reproduced on demand): one fresh
	// attempt from a reloaded page, logged, before failing.
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	err := chromedp.Run(lctx, login...)
	lcancel()
	if err != nil {
		t.Logf("login attempt 1: %v; reloading and trying again", err)
		_ = chromedp.Run(ctx, shot("login-attempt-1"))
		run("reload", chromedp.Navigate(e.base+"/"), chromedp.Sleep(time.Second))
		var signedIn bool
		run("session check", chromedp.Evaluate(`document.querySelector("#login").hidden`, &signedIn))
		if signedIn {
			run("login", chromedp.WaitVisible("#st-conn", chromedp.ByID))
		} else {
			run("login", append([]chromedp.Action{chromedp.WaitVisible("#login-username", chromedp.ByID)}, login...)...)
		}
	}

	// Overview: wait for the cards and a few chart samples (2 s apart).
	var conn string
	run("overview", chromedp.Poll(`document.querySelector("#st-conn").textContent === "2" && document.querySelector("#st-in").textContent !== "–"`, nil,
		chromedp.WithPollingTimeout(20*time.Second)))
	run("overview stats", chromedp.Text("#st-conn", &conn, chromedp.ByID))
	if conn != "2" {
		t.Errorf("overview shows %q connections, want 2", conn)
	}
	chartPoints := func(n int) chromedp.Action {
		return chromedp.Poll(fmt.Sprintf(`Number(document.querySelector("#chart-msgs").dataset.points || 0) >= %d`, n), nil,
			chromedp.WithPollingTimeout(20*time.Second))
	}
	run("overview screenshot", chartPoints(3), shot("02-overview"))

	// Clients: the test client is listed; kick it.
	row := `tr[data-client-id="sensor-kitchen-01"]`
	run("clients",
		nav("clients"),
		chromedp.WaitVisible(row, chromedp.ByQuery),
		shot("03-clients"))
	var rowText string
	run("client row", chromedp.Text(row, &rowText, chromedp.ByQuery))
	if !strings.Contains(rowText, "alice") || !strings.Contains(rowText, "v3.1.1") {
		t.Errorf("client row %q lacks user or protocol", rowText)
	}
	run("kick",
		chromedp.Click(row+" .kick", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm-ok", chromedp.ByID),
		shot("04-kick-confirm"),
		chromedp.Click("#confirm-ok", chromedp.ByID))
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the kicked client did not observe a disconnect")
	}
	run("kicked row gone",
		chromedp.WaitVisible("#toast", chromedp.ByID),
		chromedp.WaitNotPresent(row, chromedp.ByQuery),
		shot("05-after-kick"))

	// Publish from the form; the subscriber receives it.
	run("publish",
		nav("publish"),
		chromedp.WaitVisible("#pub-topic", chromedp.ByID),
		chromedp.SendKeys("#pub-topic", "dash/hello", chromedp.ByID),
		chromedp.SendKeys("#pub-payload", "hello from the console", chromedp.ByID),
		chromedp.Evaluate(`document.querySelector("#pub-qos").value = "1"`, nil),
		shot("06-publish-form"),
		chromedp.Click("#pub-submit", chromedp.ByID),
		chromedp.WaitVisible("#toast", chromedp.ByID))
	select {
	case m := <-got:
		if m.Topic() != "dash/hello" || string(m.Payload()) != "hello from the console" || m.Qos() != 1 {
			t.Errorf("subscriber got %s %q QoS %d", m.Topic(), m.Payload(), m.Qos())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message published from the dashboard not received")
	}
	run("publish toast", shot("07-published"))

	// The other pages render, in both themes.
	run("retained",
		nav("retained"),
		chromedp.WaitVisible(`#retained-table tbody tr td.mono`, chromedp.ByQuery),
		shot("08-retained"))
	run("subscriptions",
		nav("subscriptions"),
		chromedp.WaitVisible(`#subs-table tbody tr td.mono`, chromedp.ByQuery),
		shot("09-subscriptions"))
	run("listeners",
		nav("listeners"),
		chromedp.WaitVisible(`#listeners-table tbody tr`, chromedp.ByQuery),
		shot("10-listeners"))
	run("dark overview",
		chromedp.Click("#theme-toggle", chromedp.ByID),
		nav("overview"),
		chromedp.WaitVisible("#st-conn", chromedp.ByID),
		chartPoints(2),
		shot("11-overview-dark"),
		nav("clients"),
		chromedp.WaitVisible(`tr[data-client-id="watcher"]`, chromedp.ByQuery),
		shot("12-clients-dark"))

	// Not clustered: no Cluster page. Once clustered, it appears at the
	// next change of page.
	var navHidden bool
	run("no cluster page", chromedp.Evaluate(`document.querySelector("#nav-cluster").hidden`, &navHidden))
	if !navHidden {
		t.Error("the Cluster page is offered on a node that is not clustered")
	}
	fc := newFakeCluster()
	e.n.HTTP.SetCluster(fc)
	memberRow := func(name string) string { return `#cluster-table tr[data-node="` + name + `"]` }
	run("cluster page appears",
		nav("overview"),
		chromedp.WaitVisible("#nav-cluster", chromedp.ByID),
		nav("cluster"),
		chromedp.WaitVisible(memberRow("node-b"), chromedp.ByQuery),
		chromedp.WaitVisible("#cluster-drain", chromedp.ByID),
		shot("13-cluster"))
	memberText := func(name string) string {
		t.Helper()
		var s string
		run("row "+name, chromedp.Text(memberRow(name), &s, chromedp.ByQuery))
		return s
	}
	for name, wants := range map[string][]string{
		"node-a": {"this node", "127.0.0.1:7946", "alive"},
		"node-b": {"127.0.0.2:7946", "alive", "up", "12", "2.0 KiB", "3", "1,500", "1,200", "4"},
		"node-c": {"127.0.0.3:7946", "suspect", "connecting", "9"},
	} {
		got := memberText(name)
		for _, w := range wants {
			if !strings.Contains(got, w) {
				t.Errorf("cluster row %s: %q lacks %q", name, got, w)
			}
		}
	}
	var summary string
	run("cluster summary", chromedp.Text("#cluster-summary", &summary, chromedp.ByID))
	if !strings.Contains(summary, "node-a") || !strings.Contains(summary, "running") || !strings.Contains(summary, "2 alive of 3") {
		t.Errorf("cluster summary %q", summary)
	}
	run("drain",
		chromedp.Click("#cluster-drain", chromedp.ByID),
		chromedp.WaitVisible("#confirm-ok", chromedp.ByID),
		shot("14-drain-confirm"),
		chromedp.Click("#confirm-ok", chromedp.ByID),
		chromedp.WaitVisible("#toast", chromedp.ByID))
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := fc.drainCount(); n != 1 {
			return fmt.Errorf("%d drains", n)
		}
		return nil
	})
	close(fc.release)
	run("drained",
		chromedp.Poll(`document.querySelector("#cluster-summary").textContent.includes("left")`, nil,
			chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.WaitNotVisible("#cluster-drain", chromedp.ByID),
		shot("15-cluster-left"))

	// Sign out: back to the login page, and the session is gone.
	run("logout",
		chromedp.Click("#logout", chromedp.ByID),
		chromedp.WaitVisible("#login-username", chromedp.ByID))

	// A read-only user sees the cluster, without the drain button.
	run("reader login",
		chromedp.Evaluate(`document.querySelector("#login-username").value = ""; document.querySelector("#login-password").value = ""`, nil),
		chromedp.SendKeys("#login-username", "reader", chromedp.ByID),
		chromedp.SendKeys("#login-password", adminPass, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#nav-cluster", chromedp.ByID),
		nav("cluster"),
		chromedp.WaitVisible(memberRow("node-b"), chromedp.ByQuery),
		shot("16-cluster-reader"))
	var drainButtons int
	run("reader drain button", chromedp.Evaluate(`document.querySelectorAll("#cluster-drain").length`, &drainButtons))
	if drainButtons != 0 {
		t.Error("a read-only user is offered the drain button")
	}
	run("reader logout",
		chromedp.Click("#logout", chromedp.ByID),
		chromedp.WaitVisible("#login-username", chromedp.ByID))
}
