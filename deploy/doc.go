// Package deploy holds the checks for the deployment artifacts (Dockerfile,
// docker-compose.yml, Dex demo config, Kubernetes manifests); it never needs a
// Docker engine or a cluster, and is a module of its own so that compose-go
// and the Kubernetes API types never enter the broker's go.mod.
package deploy
