package authn

import "testing"

// TestPosturePermission: the posture report (a list of the hosts whose
// disks are not encrypted, and the key configuration) is read by the
// owner, the key officer and the security approver, and by no role an
// agent or a dashboard holds. docs/posture.md gives the reason.
// (docs/security.md's table gains the row when the lead integrates it;
// then posture.read joins allPerms in roles_test.go.)
func TestPosturePermission(t *testing.T) {
	want := map[Role]bool{RoleOwner: true, RoleKeyOfficer: true, RoleSecurityApprover: true}
	for _, r := range Roles() {
		if got := Allows(r, PermPostureRead); got != want[r] {
			t.Errorf("Allows(%s, %s) = %v, want %v", r, PermPostureRead, got, want[r])
		}
	}
	if serverWidePerm(PermPostureRead) {
		t.Error("posture.read is per vault: a key officer of one vault reads that vault's report")
	}
	// A vault-scoped key officer reads its own vault's report only.
	if !grantAllows(Grant{Role: RoleKeyOfficer, Vault: "a"}, PermPostureRead, "a") || grantAllows(Grant{Role: RoleKeyOfficer, Vault: "a"}, PermPostureRead, "b") {
		t.Error("a key officer of vault a: wrong scope for posture.read")
	}
}
