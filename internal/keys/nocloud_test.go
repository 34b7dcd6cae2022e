//go:build nocloudkms

package keys

import (
	"strings"
	"testing"
)

// TestOpenCloudKMSLeanBuild: a build without the cloud SDKs says so for
// every cloud scheme.
func TestOpenCloudKMSLeanBuild(t *testing.T) {
	for _, uri := range []string{"awskms://alias/k?region=eu-west-1", "hashivault://coffer", "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k"} {
		if _, err := Open(uri); err == nil || !strings.Contains(err.Error(), "without cloud KMS") {
			t.Errorf("Open(%s) = %v", uri, err)
		}
	}
}
