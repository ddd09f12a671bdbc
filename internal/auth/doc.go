// Package auth authenticates MQTT clients and authorizes their publishes,
// subscriptions and deliveries, compatibly with a Mosquitto deployment's
// password_file and acl_file.
//
// # Pieces
//
//   - PasswordFile: Mosquitto's "username:hash" file. Verifies argon2id
//     (Isobar's default for new hashes), Mosquitto's $7$ (PBKDF2-HMAC-SHA512)
//     and legacy $6$ (salted SHA-512) hashes in constant time; unknown users
//     cost the same as known ones. RunPasswd is the "isobar passwd" command.
//   - ACL: Mosquitto acl_file semantics (topic, user, pattern with %u/%c),
//     also configurable as YAML Rules. CanPublish, CanSubscribe and
//     CanReceive are allocation-free.
//   - ReadOnlyRole: public subscribe-only credentials (WIS2 "everyone").
//   - Throttle: exponential backoff per source address and per username
//     after repeated authentication failures; while either is blocked,
//     attempts are queued (one) or refused without checking the password,
//     and attempts in flight count as failures. Bounded memory.
//   - Authenticator: ties them together for the broker, with Reload.
//
// # Broker integration
//
// On CONNECT: call Authenticator.Login and hold the CONNACK back for the
// delay it returns, whatever the result (older callers: Delay, then
// AuthenticateAfter with that delay, then wait it; this cannot queue an
// attempt for a throttled username, which is then refused). Map
// ResultBadCredentials to CONNACK 0x86 (MQTT 5) / 4 (3.1.1) and
// ResultNotAuthorized to 0x87 / 5. Keep the returned Identity with the
// session and pass it, with the client identifier in use, to CanPublish
// (PUBLISH and the will), CanSubscribe (each SUBSCRIBE filter; refuse with
// reason code 0x87 / 0x80) and CanReceive (every delivery, retained
// messages included). Authenticator.CanPublish also refuses writes to
// "$SYS..." and "$share..." topics as Mosquitto does. After Reload, Mosquitto also disconnects clients
// whose credentials no longer verify; that needs the broker's session list
// and is left to the broker.
//
// # Differences from Mosquitto 2.0
//
// Deliberate, all in the direction of refusing more:
//   - Subscriptions are checked against the ACL (see SubscribeCheckFilter);
//     Mosquitto only filters deliveries. ACLConfig.SubscribeCheck "none"
//     restores Mosquitto's behaviour.
//   - A username or client id containing '/' (or starting with '$' where a
//     pattern begins with its substitution) cannot gain access through the
//     patterns that substitute it, and makes deny patterns using it deny.
//   - Without a password file, a presented username is not trusted: the
//     client is anonymous (Mosquitto would apply that user's ACL).
//   - Malformed password-file lines, plain-text passwords and duplicate
//     users are load errors with line numbers (Mosquitto skips or drops
//     them); ACL files may use tabs and indented comments.
package auth
