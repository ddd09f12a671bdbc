// Command isobar-bench is Isobar's MQTT load generator (see internal/bench).
package main

import (
	"os"

	"github.com/isobar-mq/isobar/internal/bench"
)

func main() { os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr)) }
