package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/isobar-mq/isobar/internal/config"
	"github.com/isobar-mq/isobar/internal/store"
)

const storeUsage = `usage: isobar store check [--data-dir DIR | --config FILE]
       isobar store reset [--data-dir DIR | --config FILE]

check opens the store read-only (the broker must be stopped), decodes every
record and prints counts and the first problems: exit 0 if sound, 1 if
corrupt or unreadable.
reset moves DIR aside to DIR.corrupt-<UTC time> (nothing is deleted), so the
next start creates an empty store.
Without --data-dir, DIR is store.data_dir of --config (default ./data).
`

// storeCommand runs "isobar store ...". Exit status: 0 done (check: no
// problem), 1 corrupt or failed, 2 usage.
func storeCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "reset") {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	fs := flag.NewFlagSet("store "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory (default: store.data_dir of --config, or ./data)")
	cfgPath := fs.String("config", "", "configuration file naming store.data_dir")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	dir := *dataDir
	if dir == "" {
		cfg := config.Default()
		if *cfgPath != "" {
			var err error
			if cfg, err = config.Load(*cfgPath); err != nil {
				fmt.Fprintln(stderr, "isobar: invalid configuration:", err)
				return 1
			}
		}
		dir = cfg.Store.DataDir
	}
	switch args[0] {
	case "check":
		rep, err := store.Check(dir)
		if err != nil {
			fmt.Fprintln(stderr, "isobar store check:", err)
			return 1
		}
		fmt.Fprintf(stdout, "store %s\n", dir)
		_, _ = rep.WriteTo(stdout)
		if rep.Corrupt {
			fmt.Fprintf(stdout, "restore %s from a backup, or run `isobar store reset --data-dir %s` to move it aside and start empty\n", dir, dir)
			return 1
		}
		return 0
	default:
		moved, err := store.Reset(dir, time.Now())
		if err != nil {
			fmt.Fprintln(stderr, "isobar store reset:", err)
			return 1
		}
		fmt.Fprintf(stdout, "moved %s to %s; the next start creates an empty store there\n", dir, moved)
		return 0
	}
}
