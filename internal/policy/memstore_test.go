package policy_test

import (
	"testing"

	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/policy/policytest"
)

func TestMemStore_Conformance(t *testing.T) {
	policytest.RunStoreConformance(t, func(*testing.T) policy.Store { return policy.NewMemStore() })
}
