// A small C shim over Debian's OpenSSL (libssl) for MigrationTLS: contexts loaded from PEM
// files, one TLS session per non-blocking socket, and failures classified into the few kinds
// the Swift side turns into typed errors. No OpenSSL type appears here, so Swift never
// imports OpenSSL's headers. No cryptography is implemented here: every operation is OpenSSL's.
#ifndef SWITCHOVER_TLS_H
#define SWITCHOVER_TLS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Results of the session calls.
enum {
    SWO_TLS_OK = 1,
    SWO_TLS_EOF = 0,
    SWO_TLS_FAILED = -1,
    SWO_TLS_WANT_READ = -2,
    SWO_TLS_WANT_WRITE = -3,
};

/// Why a session call failed (swo_tls_failure_info.kind).
enum {
    SWO_TLS_F_NONE = 0,
    SWO_TLS_F_UNKNOWN_CA = 1,
    SWO_TLS_F_EXPIRED = 2,
    SWO_TLS_F_NOT_YET_VALID = 3,
    SWO_TLS_F_HOSTNAME = 4,
    SWO_TLS_F_REVOKED = 5,
    SWO_TLS_F_NOT_AUTHORIZED = 6,
    SWO_TLS_F_NO_PEER_CERT = 7,
    SWO_TLS_F_BAD_CERT = 8,
    SWO_TLS_F_VERSION = 9,
    SWO_TLS_F_PEER_ALERT = 10,
    SWO_TLS_F_NOT_TLS = 11,
    SWO_TLS_F_PEER_CLOSED = 12,
    SWO_TLS_F_SYSCALL = 13,
    SWO_TLS_F_OTHER = 14,
};

/// The details of the last failure of a session.
typedef struct swo_tls_failure_info {
    int kind;
    /// X509_V_ERR_* of our own verification of the peer's certificate, or 0.
    int verify_error;
    /// The TLS alert the peer sent (its description number), or -1.
    int alert;
    /// errno of a failed system call, or 0.
    int sys_errno;
    /// OpenSSL's explanation (verification error text, alert text or error string).
    char detail[512];
    /// RFC 2253 subject of the certificate concerned, or "".
    char subject[512];
} swo_tls_failure_info;

typedef struct swo_tls_ctx swo_tls_ctx;
typedef struct swo_tls swo_tls;

/// A context for one role (server != 0: accepts, requires and verifies a client certificate;
/// else connects and verifies the server's). Versions are 0x0303 (TLS 1.2) or 0x0304 (1.3).
/// NULL on failure, with a message in err.
swo_tls_ctx *swo_tls_ctx_new(int server, int min_version, int max_version, char *err, size_t errlen);
/// Trusts the CA certificates in a PEM file; 1 on success.
int swo_tls_ctx_load_ca(swo_tls_ctx *ctx, const char *path, char *err, size_t errlen);
/// Uses this certificate (chain) and private key; 1 on success.
int swo_tls_ctx_load_identity(swo_tls_ctx *ctx, const char *cert, const char *key, char *err, size_t errlen);
/// Checks the peer's certificate against the CRLs in a PEM file; 1 on success.
int swo_tls_ctx_load_crl(swo_tls_ctx *ctx, const char *path, char *err, size_t errlen);
/// Server: accepts only clients whose certificate subject (RFC 2253, e.g. "CN=src,O=Example")
/// equals one of the names added. No name added: any client with a valid certificate.
int swo_tls_ctx_add_authorized(swo_tls_ctx *ctx, const char *dn);
void swo_tls_ctx_free(swo_tls_ctx *ctx);

/// A session on a connected, non-blocking socket. hostname (client only, may be NULL): the DNS
/// name or IP address the server's certificate must carry.
swo_tls *swo_tls_new(swo_tls_ctx *ctx, int fd, const char *hostname, char *err, size_t errlen);
/// One step of the handshake: SWO_TLS_OK when done, WANT_READ/WANT_WRITE, FAILED, EOF.
int swo_tls_handshake(swo_tls *s);
/// Client, TLS 1.3: whether the server has confirmed the handshake (sent a session ticket, or
/// data), which it does only after accepting our certificate. OK, WANT_READ, FAILED or EOF.
int swo_tls_await_confirmation(swo_tls *s);
int swo_tls_read(swo_tls *s, void *buffer, size_t count, size_t *done);
/// Writes all of buffer (or nothing on WANT_*: call again with the same arguments).
int swo_tls_write(swo_tls *s, const void *buffer, size_t count, size_t *done);
/// Sends close_notify, without waiting for the peer's.
void swo_tls_close_notify(swo_tls *s);
/// The negotiated protocol version (0x0304 for TLS 1.3).
int swo_tls_version(swo_tls *s);
/// The negotiated cipher suite's name.
const char *swo_tls_cipher(swo_tls *s);
/// The peer certificate's RFC 2253 subject; 1 when there is one.
int swo_tls_peer_subject(swo_tls *s, char *buffer, size_t length);
void swo_tls_last_failure(swo_tls *s, swo_tls_failure_info *out);
void swo_tls_free(swo_tls *s);

#ifdef __cplusplus
}
#endif

#endif
