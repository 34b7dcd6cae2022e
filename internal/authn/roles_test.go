package authn

import (
	"bufio"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

var allPerms = []Permission{
	PermVaultCreate, PermTokenManage, PermMetrics, PermRoleManage, PermAuditRead, PermRequestRead, PermRequestDecide,
	PermVaultRead, PermDataRead, PermBackupWrite, PermCheck, PermKeyRead, PermKeyManage,
	PermSnapshotDelete, PermVaultSettings, PermVaultDelete, PermSourceManage, PermVaultRepair, PermPostureRead, PermVaultRecover,
}

// want is the documented table (docs/security.md, "Roles and tokens").
var want = map[Role][]Permission{
	// Everything but deciding requests: an owner may not approve
	// critical changes, its own or anyone's.
	RoleOwner: slices.DeleteFunc(slices.Clone(allPerms), func(p Permission) bool { return p == PermRequestDecide }),
	RoleBackupContributor: {PermVaultCreate, PermMetrics, PermVaultRead, PermDataRead, PermBackupWrite, PermCheck,
		PermSnapshotDelete, PermVaultSettings, PermRequestRead, PermSourceManage},
	RoleBackupOperator:   {PermVaultRead, PermDataRead, PermBackupWrite, PermCheck},
	RoleBackupReader:     {PermVaultRead},
	RoleKeyOfficer:       {PermKeyRead, PermKeyManage, PermPostureRead},
	RoleSecurityApprover: {PermRequestRead, PermRequestDecide, PermPostureRead},
}

func TestAllows(t *testing.T) {
	for _, r := range Roles() {
		for _, p := range allPerms {
			if got, want := Allows(r, p), slices.Contains(want[r], p); got != want {
				t.Errorf("Allows(%s, %s) = %v, want %v", r, p, got, want)
			}
		}
	}
	// Deny by default.
	for _, r := range []Role{"", "Owner", "owner ", "admin", "principal", "backup_contributor", "key officer"} {
		for _, p := range allPerms {
			if Allows(r, p) {
				t.Errorf("unknown role %q allows %s", r, p)
			}
		}
	}
	for _, p := range []Permission{"", "vault.*", "*", "Vault.Read", "key.rotate"} {
		for _, r := range Roles() {
			if Allows(r, p) {
				t.Errorf("role %s allows unknown permission %q", r, p)
			}
		}
	}
	// Nobody but the owner may delete.
	for r := range rolePerms {
		if r != RoleOwner && Allows(r, PermVaultDelete) {
			t.Errorf("role %s may delete", r)
		}
	}
	if len(rolePerms) != len(Roles()) {
		t.Errorf("rolePerms has %d roles, Roles() %d", len(rolePerms), len(Roles()))
	}
}

// TestDocumentedTable checks that docs/security.md shows rolePerms as it
// is: every permission row, every role column, yes or no.
func TestDocumentedTable(t *testing.T) {
	f, err := os.Open("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var (
		inSection bool
		cols      []Role
		rows      = map[Permission]bool{}
	)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inSection = line == "## Roles and tokens (server mode)"
			continue
		}
		if !inSection || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == "permission" {
			cols = nil
			for _, c := range cells[2:] {
				cols = append(cols, Role(strings.Trim(c, "`")))
			}
			continue
		}
		p := Permission(strings.Trim(cells[0], "`"))
		if !slices.Contains(allPerms, p) {
			continue // the separator row, or another table
		}
		rows[p] = true
		if len(cells) != 2+len(cols) {
			t.Errorf("row %s has %d cells, want %d", p, len(cells), 2+len(cols))
			continue
		}
		for i, r := range cols {
			var documented bool
			switch cells[2+i] {
			case "yes":
				documented = true
			case "no":
			default:
				t.Errorf("row %s, column %s: %q, want yes or no", p, r, cells[2+i])
			}
			if documented != Allows(r, p) {
				t.Errorf("docs say %s %s %s; Allows says %v", r, map[bool]string{true: "has", false: "lacks"}[documented], p, Allows(r, p))
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cols, Roles()) {
		t.Errorf("documented role columns %q, want %q", cols, Roles())
	}
	for _, p := range allPerms {
		if !rows[p] {
			t.Errorf("permission %s is not in the documented table", p)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range Roles() {
		if got, err := ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Owner", " owner", "backup_operator", "reader", "admin"} {
		_, err := ParseRole(s)
		if err == nil {
			t.Errorf("ParseRole(%q) succeeded", s)
			continue
		}
		for _, r := range Roles() {
			if !strings.Contains(err.Error(), string(r)) {
				t.Errorf("ParseRole(%q): error %q does not list %s", s, err, r)
			}
		}
	}
}

func TestCheckScope(t *testing.T) {
	for _, tt := range []struct {
		role  Role
		vault string
		ok    bool
	}{
		{RoleOwner, "", true},
		{RoleOwner, "a", false},
		{RoleBackupOperator, "a", true},
		{RoleBackupOperator, "", false},
		{RoleBackupReader, "a", true},
		{RoleBackupReader, "", false},
		{"admin", "", false},
		{"admin", "a", false},
	} {
		if err := CheckScope(tt.role, tt.vault); (err == nil) != tt.ok {
			t.Errorf("CheckScope(%s, %q) = %v, want ok=%v", tt.role, tt.vault, err, tt.ok)
		}
	}
}

func TestAuthorize(t *testing.T) {
	owner := vault.TokenRecord{ID: "00000000000000aa", Role: string(RoleOwner)}
	opA := vault.TokenRecord{ID: "00000000000000bb", Role: string(RoleBackupOperator), Vault: "a"}
	readA := vault.TokenRecord{ID: "00000000000000cc", Role: string(RoleBackupReader), Vault: "a"}
	serverWide := []Permission{PermVaultCreate, PermVaultRecover, PermTokenManage, PermMetrics, PermRoleManage, PermAuditRead, PermRequestRead, PermRequestDecide}

	// Every role and permission on the token's own vault (or, for
	// server-wide permissions, the server) follows the table.
	for _, tok := range []vault.TokenRecord{owner, opA, readA} {
		for _, p := range allPerms {
			vaultName := "a"
			if slices.Contains(serverWide, p) {
				vaultName = ""
			}
			err := Authorize(tok, p, vaultName)
			if want := slices.Contains(want[Role(tok.Role)], p); (err == nil) != want {
				t.Errorf("Authorize(%s, %s, %q) = %v, want allowed=%v", tok.Role, p, vaultName, err, want)
			}
			if err != nil && !errors.Is(err, ErrForbidden) {
				t.Errorf("Authorize(%s, %s): %v, want ErrForbidden", tok.Role, p, err)
			}
		}
	}

	// The owner may do everything but decide requests, on every vault;
	// vaultName does not matter to server-wide permissions.
	for _, v := range []string{"a", "b", "Ärchiv"} {
		for _, p := range want[RoleOwner] {
			if err := Authorize(owner, p, v); err != nil {
				t.Errorf("owner: Authorize(%s, %q) = %v", p, v, err)
			}
		}
	}

	// A vault token is useless on another vault, even one whose name
	// differs only in case or space, and holds no server-wide permission.
	for _, tok := range []vault.TokenRecord{opA, readA} {
		for _, v := range []string{"b", "A", "a ", ""} {
			for _, p := range allPerms {
				if err := Authorize(tok, p, v); !errors.Is(err, ErrForbidden) {
					t.Errorf("%s token for vault a: Authorize(%s, %q) = %v, want ErrForbidden", tok.Role, p, v, err)
				}
			}
		}
		for _, p := range serverWide {
			if err := Authorize(tok, p, "a"); !errors.Is(err, ErrForbidden) {
				t.Errorf("%s token: Authorize(%s, a) = %v, want ErrForbidden", tok.Role, p, err)
			}
		}
	}

	// Tokens whose scope does not fit their role, or with an unknown role,
	// authorize nothing.
	for _, tok := range []vault.TokenRecord{
		{ID: "1", Role: string(RoleOwner), Vault: "a"},
		{ID: "2", Role: string(RoleBackupOperator)},
		{ID: "3", Role: string(RoleBackupReader)},
		{ID: "4", Role: "admin"},
		{ID: "5", Role: "admin", Vault: "a"},
		{ID: "6", Role: ""},
	} {
		for _, p := range allPerms {
			for _, v := range []string{"", "a"} {
				if err := Authorize(tok, p, v); !errors.Is(err, ErrForbidden) {
					t.Errorf("token %+v: Authorize(%s, %q) = %v, want ErrForbidden", tok, p, v, err)
				}
			}
		}
	}

	// A vault permission without a vault is refused, even to the owner.
	if err := Authorize(owner, PermVaultRead, ""); !errors.Is(err, ErrForbidden) {
		t.Errorf("owner: Authorize(vault.read, \"\") = %v, want ErrForbidden", err)
	}

	// The message names the permission, the role and the scope.
	err := Authorize(readA, PermBackupWrite, "a")
	for _, s := range []string{"backup.write", "backup-reader", `vault "a"`, readA.ID} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not name %s", err, s)
		}
	}
	t.Logf("%v", err)
	err = Authorize(opA, PermTokenManage, "")
	for _, s := range []string{"token.manage", "backup-operator", "the server"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not name %s", err, s)
		}
	}
	t.Logf("%v", err)
}

// TestAccessLimits: a token's access is its own grants narrowed by every
// issuer's; Covers tells whether an issuer may hand out a grant.
func TestAccessLimits(t *testing.T) {
	owner := []Grant{{Role: RoleOwner}}
	contribA := []Grant{{Role: RoleBackupContributor, Vault: "a"}}
	opA := Grant{Role: RoleBackupOperator, Vault: "a"}

	// An owner grant limited by a contributor on a: only the contributor's
	// permissions, only on a.
	acc := Access{Grants: owner, Limits: [][]Grant{contribA}}
	for _, c := range []struct {
		p     Permission
		vault string
		want  bool
	}{
		{PermBackupWrite, "a", true}, {PermBackupWrite, "b", false}, {PermVaultDelete, "a", false},
		{PermTokenManage, "", false}, {PermKeyManage, "a", false}, {PermSourceManage, "a", true},
	} {
		if got := acc.Allows(c.p, c.vault); got != c.want {
			t.Errorf("owner limited by contributor on a: Allows(%s, %q) = %v, want %v", c.p, c.vault, got, c.want)
		}
	}
	if err := AuthorizeAccess("x", acc, PermVaultDelete, "a"); !errors.Is(err, ErrForbidden) {
		t.Errorf("AuthorizeAccess beyond the limit: %v", err)
	}
	// A limit of nothing (an issuer that cannot be found) allows nothing.
	if (Access{Grants: owner, Limits: [][]Grant{nil}}).Allows(PermVaultRead, "a") {
		t.Error("a nil limit allowed something")
	}

	for _, c := range []struct {
		what string
		acc  Access
		g    Grant
		want bool
	}{
		{"owner covers owner", Access{Grants: owner}, Grant{Role: RoleOwner}, true},
		{"owner covers operator on a", Access{Grants: owner}, opA, true},
		{"owner does not cover approver", Access{Grants: owner}, Grant{Role: RoleSecurityApprover}, false},
		{"contributor on a covers operator on a", Access{Grants: contribA}, opA, true},
		{"contributor on a does not cover operator on b", Access{Grants: contribA}, Grant{Role: RoleBackupOperator, Vault: "b"}, false},
		{"contributor on a does not cover operator everywhere", Access{Grants: contribA}, Grant{Role: RoleBackupOperator}, false},
		{"contributor on a does not cover owner", Access{Grants: contribA}, Grant{Role: RoleOwner}, false},
		{"contributor on a does not cover key-officer on a", Access{Grants: contribA}, Grant{Role: RoleKeyOfficer, Vault: "a"}, false},
		{"contributor everywhere covers operator everywhere", Access{Grants: []Grant{{Role: RoleBackupContributor}}}, Grant{Role: RoleBackupOperator}, true},
		{"operator on a and on b does not cover operator everywhere", Access{Grants: []Grant{opA, {Role: RoleBackupOperator, Vault: "b"}}}, Grant{Role: RoleBackupOperator}, false},
		{"owner limited by contributor on a does not cover owner", Access{Grants: owner, Limits: [][]Grant{contribA}}, Grant{Role: RoleOwner}, false},
		{"owner limited by contributor on a covers operator on a", Access{Grants: owner, Limits: [][]Grant{contribA}}, opA, true},
		{"an invalid grant is never covered", Access{Grants: owner}, Grant{Role: RoleOwner, Vault: "a"}, false},
		{"an unknown role is never covered", Access{Grants: owner}, Grant{Role: "root"}, false},
	} {
		if got := c.acc.Covers(c.g); got != c.want {
			t.Errorf("%s: Covers = %v, want %v", c.what, got, c.want)
		}
	}
	if g := RoleGrants(RoleOwner, "a"); g != nil {
		t.Errorf("RoleGrants(owner, a) = %v, want none", g)
	}
	if g := RoleGrants(RolePrincipal, ""); g != nil {
		t.Errorf("RoleGrants(principal) = %v, want none", g)
	}
}
