package authn

import (
	"fmt"
	"slices"
	"strings"
)

// Role is what a token may do, granted through the rolePerms table.
// Roles are stored in the catalog as these strings.
type Role string

const (
	// RoleOwner administers the whole server: it creates vaults, manages
	// tokens, and may do everything on every vault.
	RoleOwner Role = "owner"
	// RoleBackupOperator runs backup, restore and check on one vault,
	// and lists it; it cannot delete anything.
	RoleBackupOperator Role = "backup-operator"
	// RoleBackupReader lists one vault: its snapshots and their trees
	// (file names and metadata), never file contents.
	RoleBackupReader Role = "backup-reader"
	// RoleSecurityApprover approves or rejects multi-user authorization
	// requests (critical deletion-protection and key changes), and does
	// nothing else. Server-wide. Its tokens are issued on the server
	// machine (coffer server approver-token), never through the API, so
	// that an owner cannot make one and approve their own request.
	RoleSecurityApprover Role = "security-approver"
	// RoleBackupContributor manages vaults, their policies and sources:
	// creates vaults, backs up, restores, forgets, prunes, changes
	// protection settings; it cannot delete a vault, touch keys or
	// assign roles.
	RoleBackupContributor Role = "backup-contributor"
	// RoleKeyOfficer runs key operations only: key status, rotation,
	// switching keys. No data, no listing.
	RoleKeyOfficer Role = "key-officer"
	// RolePrincipal is not a role: it marks a token issued to a principal,
	// which acts with the principal's role assignments.
	RolePrincipal Role = "principal"
)

// Permission is one thing a request may need. Server-wide permissions
// (vault creation, token management, metrics) concern no single vault;
// the others concern the vault the request names.
type Permission string

const (
	// PermVaultCreate: create vaults. Server-wide.
	PermVaultCreate Permission = "vault.create"
	// PermVaultRecover: rebuild a vault the catalog lost from its store
	// and key (coffer vault recover), naming the store to trust and the
	// key to open it with. Server-wide.
	PermVaultRecover Permission = "vault.recover"
	// PermTokenManage: create, list and revoke tokens. Server-wide.
	PermTokenManage Permission = "token.manage"
	// PermMetrics: read the server's metrics. Server-wide.
	PermMetrics Permission = "metrics.read"

	// PermVaultRead: vault show, list snapshots, and read trees for ls
	// and diff (file names and metadata, not contents).
	PermVaultRead Permission = "vault.read"
	// PermDataRead: read data blobs, which restore needs.
	PermDataRead Permission = "data.read"
	// PermBackupWrite: ask which blobs are missing, upload blobs, save
	// snapshots.
	PermBackupWrite Permission = "backup.write"
	// PermCheck: run check, with or without --read-data.
	PermCheck Permission = "vault.check"
	// PermKeyRead: see the vault's key encryption key, probe it, and
	// read the vault's key events.
	PermKeyRead Permission = "key.read"
	// PermKeyManage: rotate the vault's data key and switch its key
	// encryption key (to a customer-managed key and back).
	PermKeyManage Permission = "key.manage"
	// PermSnapshotDelete: forget (soft-delete) and undelete snapshots,
	// and prune what no snapshot needs.
	PermSnapshotDelete Permission = "snapshot.delete"
	// PermVaultSettings: change a vault's deletion protection and its
	// stored retention policy (critical changes still need approval).
	PermVaultSettings Permission = "vault.settings"
	// PermSourceManage: add a source (an agent that backs up into the
	// vault): an agent principal with the backup-operator role on the
	// vault, and a token for it.
	PermSourceManage Permission = "source.manage"
	// PermRoleManage: create principals, assign and revoke roles.
	// Server-wide.
	PermRoleManage Permission = "role.manage"
	// PermAuditRead: read and export the audit log. Server-wide.
	PermAuditRead Permission = "audit.read"
	// PermRequestRead: list multi-user authorization requests.
	// Server-wide.
	PermRequestRead Permission = "request.read"
	// PermRequestDecide: approve or reject another principal's request.
	// Server-wide.
	PermRequestDecide Permission = "request.decide"
	// PermVaultDelete: ask to delete the vault (a critical change: a
	// security approver must approve it).
	PermVaultDelete Permission = "vault.delete"
	// PermVaultRepair: repair a damaged vault (repair index, repair
	// snapshots). Repairing snapshots drops what is lost from history,
	// so it is the owner's, and a critical change on a server.
	PermVaultRepair Permission = "vault.repair"
	// PermPostureRead: read a vault's signed posture report
	// (docs/posture.md). It names every source's host and whether its
	// disk is encrypted (a list of the weakest machines), the key
	// configuration and the certificate: the owner, the key officer
	// (whose remit the key checks are) and the security approver (who
	// judges critical changes on this evidence) read it; the roles held
	// by agents and dashboards (operator, reader) do not, and neither
	// does the contributor, which manages policy but not its evidence.
	PermPostureRead Permission = "posture.read"
)

// rolePerms is the one table of what each role may do; docs/security.md
// shows it, and a test keeps the two equal. Deny by default: a role that
// is not here, or a permission not listed for a role, is refused. Never
// written to.
//
// backup-reader may not run check, not even without --read-data: check
// reads every pack header and tree of the vault, a load a listing token
// (a dashboard, a monitoring job) should not be able to put on the server,
// and the reader has nothing to repair with its result. Operators check.
var rolePerms = map[Role][]Permission{
	RoleOwner: {
		PermVaultCreate, PermTokenManage, PermMetrics,
		PermVaultRead, PermDataRead, PermBackupWrite, PermCheck, PermKeyRead, PermKeyManage,
		PermSnapshotDelete, PermVaultSettings, PermRequestRead, PermVaultDelete, PermRoleManage, PermAuditRead,
		PermSourceManage, PermVaultRepair, PermPostureRead, PermVaultRecover,
	},
	RoleBackupContributor: {
		PermVaultCreate, PermMetrics, PermVaultRead, PermDataRead, PermBackupWrite, PermCheck,
		PermSnapshotDelete, PermVaultSettings, PermRequestRead, PermSourceManage,
	},
	RoleBackupOperator:   {PermVaultRead, PermDataRead, PermBackupWrite, PermCheck},
	RoleBackupReader:     {PermVaultRead},
	RoleKeyOfficer:       {PermKeyRead, PermKeyManage, PermPostureRead},
	RoleSecurityApprover: {PermRequestRead, PermRequestDecide, PermPostureRead},
}

// roles lists the roles in the order help texts show them.
var roles = []Role{RoleOwner, RoleBackupContributor, RoleBackupOperator, RoleBackupReader, RoleKeyOfficer, RoleSecurityApprover}

// Roles returns every role, owner first.
func Roles() []Role { return slices.Clone(roles) }

// Allows reports whether role grants p. An unknown role allows nothing.
func Allows(role Role, p Permission) bool {
	return slices.Contains(rolePerms[role], p)
}

// ParseRole returns the role named s, exactly as spelled in the table.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if _, ok := rolePerms[r]; !ok {
		names := make([]string, len(roles))
		for i, r := range roles {
			names[i] = string(r)
		}
		return "", fmt.Errorf("unknown role %q: valid roles are %s", s, strings.Join(names, ", "))
	}
	return r, nil
}

// serverWideRole reports whether tokens of role r apply to the whole
// server (Vault ""), vaultRole whether they name one vault; tokens of the
// other roles (backup-contributor, key-officer) may do either.
func serverWideRole(r Role) bool { return r == RoleOwner || r == RoleSecurityApprover }

func vaultRole(r Role) bool { return r == RoleBackupOperator || r == RoleBackupReader }

// serverWidePerm reports whether p concerns the server rather than one
// vault; only a server-wide token can hold it.
func serverWidePerm(p Permission) bool {
	switch p {
	case PermVaultCreate, PermVaultRecover, PermTokenManage, PermMetrics, PermRequestRead, PermRequestDecide, PermRoleManage, PermAuditRead:
		return true
	}
	return false
}

// CheckScope reports whether a token of role may be issued for vaultName
// ("" for server-wide): owner tokens are server-wide, the other roles'
// tokens name one vault. Whoever creates tokens calls it first; a token
// that fails it authorizes nothing.
func CheckScope(role Role, vaultName string) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	switch {
	case serverWideRole(role) && vaultName != "":
		return fmt.Errorf("role %s is server-wide: do not name a vault", role)
	case vaultRole(role) && vaultName == "":
		return fmt.Errorf("role %s applies to one vault: name the vault", role)
	}
	return nil
}

// Grant is one role on one scope: the whole server (Vault "") or one
// vault. A token carrying its own role has one grant; a token issued to a
// principal has the principal's role assignments.
type Grant struct {
	Role  Role
	Vault string
}

// CheckAssignment reports whether role may be assigned on vaultName (""
// for server-wide): every role may be server-wide; owner and
// security-approver only server-wide.
func CheckAssignment(role Role, vaultName string) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	if vaultName != "" && (role == RoleOwner || role == RoleSecurityApprover) {
		return fmt.Errorf("role %s is server-wide: do not name a vault", role)
	}
	return nil
}

// grantAllows reports whether g allows p on vaultName.
func grantAllows(g Grant, p Permission, vaultName string) bool {
	if !Allows(g.Role, p) {
		return false
	}
	if serverWidePerm(p) {
		return g.Vault == ""
	}
	return vaultName != "" && (g.Vault == "" || g.Vault == vaultName)
}
