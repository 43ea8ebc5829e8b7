// Package cluster runs docker-compose.yml's topology for real, as processes on
// network hosts of their own (ip netns), and breaks it; it is only a test.
//
// The hosts are db (PostgreSQL), idp (Dex), broker-a, broker-b, lb (HAProxy)
// and client, on one bridge inside a switch namespace, so the machine's own
// network is never touched. Each service gets the environment the compose
// file gives it. TestCluster needs root, iproute2 and haproxy; it cleans up
// after itself, also when interrupted, and sweeps what a killed run left.
package cluster
