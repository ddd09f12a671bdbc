// Command isobar is the Isobar MQTT broker.
//
//	isobar serve [--config FILE]   run the broker
//	isobar passwd ...              manage password files
//	isobar store check|reset ...   examine or move aside a data directory
//	isobar ctl ...                 manage a running node (cluster status, drain)
//	isobar keygen [-o FILE [-f]]   generate a cluster secret
//	isobar version                 print the version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/isobar-mq/isobar/internal/auth"
	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/node"
	"github.com/isobar-mq/isobar/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `Isobar: an MQTT 3.1, 3.1.1 and 5.0 broker: one node or a cluster, durable state on disk.

Usage:
  isobar serve [--config FILE]     run the broker (no file: 127.0.0.1:1883, anonymous)
  isobar check-config FILE         validate a configuration file and exit
  isobar passwd [-c] [-b] [-D] [-U] FILE [USER] [PASSWORD]
                                   manage a password file (mosquitto_passwd compatible)
  isobar store check [--data-dir DIR | --config FILE]
                                   verify every stored record (broker stopped); exit 1 if corrupt
  isobar store reset [--data-dir DIR | --config FILE]
                                   move the data directory aside (kept) so the next start is empty
  isobar ctl [--url URL] [--api-key KEY | --user U --password P] cluster status [--json]
  isobar ctl [--url URL] [--api-key KEY | --user U --password P] drain [--timeout D]
                                   manage a running node through its HTTP API ("isobar ctl -h")
  isobar keygen [-o FILE [-f]]     generate a cluster secret (stdout, or FILE with mode 0600; -f overwrites)
  isobar version                   print the version
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "check-config":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "usage: isobar check-config FILE")
			return 2
		}
		if _, err := config.Load(args[1]); err != nil {
			fmt.Fprintln(stderr, "invalid configuration:", err)
			return 1
		}
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	case "passwd":
		return auth.RunPasswd(args[1:], stdin, stdout, stderr)
	case "store":
		return storeCommand(args[1:], stdout, stderr)
	case "ctl":
		return ctlCommand(args[1:], stdout, stderr)
	case "keygen":
		return keygenCommand(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "isobar %s\n", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func buildVersion() string { return version.String() }

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	ho := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML); none = built-in defaults")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			fmt.Fprintln(stderr, "isobar: invalid configuration:", err)
			return 1
		}
	}
	log := newLogger(cfg.Log, stderr)
	if *cfgPath == "" {
		log.Warn("no configuration file given: running on built-in defaults (MQTT on 127.0.0.1:1883, anonymous access allowed)")
	}
	n, err := node.Start(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	log.Info("isobar started", "version", buildVersion(), "node", cfg.NodeName)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				n.Reload()
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break wait
		case <-n.Done():
			log.Info("drained: left the cluster")
			break wait
		}
	}
	signal.Stop(sigs)
	if n.Cluster != nil && cfg.Cluster.Shutdown == "drain" && n.Cluster.Status().State == "running" {
		// A rolling restart loses nothing: the sessions go to the others.
		if err := n.Drain(context.Background()); err != nil {
			log.Warn("drain incomplete", "err", err)
		}
		<-n.Done()
		log.Info("stopped")
		return 0
	}
	if err := n.Stop(context.Background()); err != nil {
		log.Warn("shutdown incomplete", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
