/**
 * Authentication and authorization for the manager, storage-agnostic: the privilege
 * catalogue and roles, password hashing, bearer tokens, and the access declaration every
 * REST route makes. Nothing here reads or writes a database; callers pass records in.
 */
export type { Privilege, PrivilegeId } from './privileges.js';
export {
  ALL_PRIVILEGES,
  CRYPTO_PRIVILEGES,
  PRIVILEGE_CATALOGUE,
  Priv,
  describePrivilege,
  isCryptoPrivilege,
  isPrivilege,
  parsePrivilege,
} from './privileges.js';

export type { CustomRoleInput, Principal, Role } from './roles.js';
export {
  ADMINISTRATOR,
  AUDITOR,
  BUILT_IN_ROLES,
  NO_CRYPTOGRAPHY_ADMINISTRATOR,
  READ_ONLY,
  builtInRole,
  can,
  defineCustomRole,
  effectivePrivileges,
  missingPrivileges,
  requireAll,
  requireCanGrant,
} from './roles.js';

export {
  PASSWORD_MAX_CHARS,
  PASSWORD_MIN_CHARS,
  SCRYPT_PARAMS,
  authenticatePassword,
  checkPasswordPolicy,
  hashPassword,
  needsRehash,
  verifyPassword,
} from './passwords.js';

export type {
  IssuedToken,
  NewToken,
  OneTimeTokenRecord,
  ParsedToken,
  TokenHash,
  TokenKind,
  TokenRecord,
} from './tokens.js';
export {
  DEFAULT_ENROLLMENT_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  MAX_ENROLLMENT_TTL_MS,
  MAX_SESSION_TTL_MS,
  TOKEN_PREFIX,
  hashToken,
  issueToken,
  markUsed,
  newApiToken,
  newEnrollmentToken,
  newSession,
  parseBearer,
  parseToken,
  tokenMatchesHash,
  verifyEnrollmentToken,
  verifyToken,
} from './tokens.js';

export type {
  EventTypeName,
  HttpMethod,
  RouteCheckOptions,
  RouteDeclaration,
  RoutePolicy,
  RoutePrivilege,
} from './route-policy.js';
export { assertEveryRouteDeclaresPrivilege, authorizeRoute } from './route-policy.js';
