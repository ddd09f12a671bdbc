//go:build ignore

// gen writes wth.txt, the compact form of the WIS2 Topic Hierarchy code lists that the package
// embeds, from a WTH directory (the layout of shared/wis2/wth, the upstream topic-hierarchy/
// directory or an unpacked wth-bundle.zip). Run it with go generate in internal/wis2.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/isobar-mq/isobar/internal/wis2"
)

func main() {
	dir := flag.String("wth", "", "WTH directory to read")
	source := flag.String("source", "", "source to record (repository@commit)")
	out := flag.String("o", "wth.txt", "output file")
	flag.Parse()
	if *dir == "" || *source == "" {
		fmt.Fprintln(os.Stderr, "gen: -wth and -source are required")
		os.Exit(2)
	}
	h, err := wis2.LoadHierarchy(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	text, err := h.WithSource(*source).MarshalText()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, text, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
