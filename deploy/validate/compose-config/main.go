// Command compose-config loads a Compose file with compose-go, the library
// behind `docker compose config`: it validates the file against the Compose
// specification's schema, interpolates ${VAR:-default} (from the file's own
// defaults only, never the caller's environment), resolves anchors, merges
// and checks references such as depends_on, then prints the resulting model
// as JSON. No Docker engine is involved.
//
//	compose-config deploy/compose.yaml > model.json
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-config COMPOSE_FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "compose-config: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func run(path string) error {
	opts, err := cli.NewProjectOptions(
		[]string{path},
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(false),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}
