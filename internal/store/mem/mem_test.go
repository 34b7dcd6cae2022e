package mem_test

import (
	"testing"

	"github.com/coffer-backup/coffer/internal/store/mem"
	"github.com/coffer-backup/coffer/internal/store/storetest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) vault.Store { return mem.New() })
}
