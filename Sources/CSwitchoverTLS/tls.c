// See switchover_tls.h. Every call that can fail fills the session's failure record on the
// thread that made it (OpenSSL's error queue is per thread), then clears the queue.
#include "switchover_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct swo_tls_ctx {
    SSL_CTX *ssl;
    int server;
    char **authorized;
    size_t authorized_count;
};

struct swo_tls {
    swo_tls_ctx *ctx;
    SSL *ssl;
    int ticket_seen;
    int authz_denied;
    int verify_error;
    char verify_subject[512];
    char verify_detail[512];
    swo_tls_failure_info failure;
};

// A socket BIO of our own: OpenSSL's writes with write(2), which raises SIGPIPE when the peer
// has gone; a library must not kill its VMM for that, so this one sends with MSG_NOSIGNAL.
static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;

static int socket_fd(BIO *b) { return (int)(intptr_t)BIO_get_data(b); }

static int socket_write(BIO *b, const char *buffer, int length) {
    BIO_clear_retry_flags(b);
    ssize_t n = send(socket_fd(b), buffer, (size_t)length, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(b);
        return -1;
    }
    return (int)n;
}

static int socket_read(BIO *b, char *buffer, int length) {
    BIO_clear_retry_flags(b);
    ssize_t n = recv(socket_fd(b), buffer, (size_t)length, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(b);
        return -1;
    }
    return (int)n;
}

static long socket_ctrl(BIO *b, int command, long number, void *pointer) {
    (void)number;
    switch (command) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_C_GET_FD:
        if (pointer) *(int *)pointer = socket_fd(b);
        return socket_fd(b);
    default:
        return 0;
    }
}

static int socket_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int socket_destroy(BIO *b) {
    (void)b; // the descriptor belongs to the Swift connection
    return 1;
}

static void make_socket_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "switchover socket");
    if (!m) return;
    BIO_meth_set_write(m, socket_write);
    BIO_meth_set_read(m, socket_read);
    BIO_meth_set_ctrl(m, socket_ctrl);
    BIO_meth_set_create(m, socket_create);
    BIO_meth_set_destroy(m, socket_destroy);
    socket_method = m;
}

static void copy_string(char *dst, size_t len, const char *src) {
    if (len == 0) return;
    snprintf(dst, len, "%s", src ? src : "");
}

static void openssl_message(char *err, size_t errlen, const char *what) {
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    if (err && errlen) snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

static void name_rfc2253(X509_NAME *name, char *out, size_t len) {
    out[0] = 0;
    if (!name || len == 0) return;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(bio, out, (int)(len - 1));
        out[n > 0 ? n : 0] = 0;
    }
    BIO_free(bio);
}

static void time_text(const ASN1_TIME *t, char *out, size_t len) {
    out[0] = 0;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return;
    if (t && ASN1_TIME_print(bio, t)) {
        int n = BIO_read(bio, out, (int)(len - 1));
        out[n > 0 ? n : 0] = 0;
    }
    BIO_free(bio);
}

static int verify_callback(int ok, X509_STORE_CTX *store) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    swo_tls *s = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!s) return ok;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    if (!ok) {
        if (s->verify_error == 0) {
            int error = X509_STORE_CTX_get_error(store);
            s->verify_error = error;
            name_rfc2253(cert ? X509_get_subject_name(cert) : NULL, s->verify_subject, sizeof s->verify_subject);
            char from[64], until[64];
            time_text(cert ? X509_get0_notBefore(cert) : NULL, from, sizeof from);
            time_text(cert ? X509_get0_notAfter(cert) : NULL, until, sizeof until);
            snprintf(s->verify_detail, sizeof s->verify_detail, "%s (valid from %s until %s)",
                     X509_verify_cert_error_string(error), from, until);
        }
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(store) == 0 && s->ctx->server && s->ctx->authorized_count > 0) {
        char dn[512];
        name_rfc2253(cert ? X509_get_subject_name(cert) : NULL, dn, sizeof dn);
        for (size_t i = 0; i < s->ctx->authorized_count; i++) {
            if (strcmp(dn, s->ctx->authorized[i]) == 0) return 1;
        }
        s->authz_denied = 1;
        s->verify_error = X509_V_ERR_APPLICATION_VERIFICATION;
        copy_string(s->verify_subject, sizeof s->verify_subject, dn);
        copy_string(s->verify_detail, sizeof s->verify_detail, "the client is not in the authorized list");
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static int new_session_callback(SSL *ssl, SSL_SESSION *session) {
    (void)session;
    swo_tls *s = SSL_get_app_data(ssl);
    if (s) s->ticket_seen = 1;
    return 0; // not kept: a migration never resumes a session
}

swo_tls_ctx *swo_tls_ctx_new(int server, int min_version, int max_version, char *err, size_t errlen) {
    ERR_clear_error();
    swo_tls_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) { copy_string(err, errlen, "out of memory"); return NULL; }
    ctx->server = server;
    ctx->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl) { openssl_message(err, errlen, "SSL_CTX_new"); free(ctx); return NULL; }
    if (!SSL_CTX_set_min_proto_version(ctx->ssl, min_version) || !SSL_CTX_set_max_proto_version(ctx->ssl, max_version)) {
        openssl_message(err, errlen, "unsupported TLS version");
        swo_tls_ctx_free(ctx);
        return NULL;
    }
    // AES-128-GCM first: as strong as a migration needs and the fastest with AES-NI.
    SSL_CTX_set_ciphersuites(ctx->ssl, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    SSL_CTX_set_cipher_list(ctx->ssl, "ECDHE+AESGCM:ECDHE+CHACHA20");
    SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read several records per recv(2) instead of a header and a body each time.
    SSL_CTX_set_read_ahead(ctx->ssl, 1);
    SSL_CTX_set_default_read_buffer_len(ctx->ssl, 64 * 1024);
    if (server) {
        SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
        SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
        // One ticket (OpenSSL sends two by default): the client waits for the first as the
        // sign that its certificate was accepted, and never reads the channel again. A second
        // ticket left unread in the client's socket makes its close() a TCP reset, which
        // destroys data the destination has not yet read (a multifd channel cut mid-stream).
        SSL_CTX_set_num_tickets(ctx->ssl, 1);
    } else {
        SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER, verify_callback);
        SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx->ssl, new_session_callback);
    }
    return ctx;
}

int swo_tls_ctx_load_ca(swo_tls_ctx *ctx, const char *path, char *err, size_t errlen) {
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx->ssl, path, NULL) != 1) {
        openssl_message(err, errlen, "cannot load the CA certificates");
        return 0;
    }
    if (ctx->server) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(path);
        if (names) SSL_CTX_set_client_CA_list(ctx->ssl, names);
    }
    ERR_clear_error();
    return 1;
}

int swo_tls_ctx_load_identity(swo_tls_ctx *ctx, const char *cert, const char *key, char *err, size_t errlen) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cert) != 1) {
        openssl_message(err, errlen, "cannot load the certificate");
        return 0;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx->ssl, key, SSL_FILETYPE_PEM) != 1) {
        openssl_message(err, errlen, "cannot load the private key");
        return 0;
    }
    if (SSL_CTX_check_private_key(ctx->ssl) != 1) {
        openssl_message(err, errlen, "the private key does not match the certificate");
        return 0;
    }
    return 1;
}

int swo_tls_ctx_load_crl(swo_tls_ctx *ctx, const char *path, char *err, size_t errlen) {
    ERR_clear_error();
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl);
    X509_LOOKUP *lookup = store ? X509_STORE_add_lookup(store, X509_LOOKUP_file()) : NULL;
    if (!lookup || X509_load_crl_file(lookup, path, X509_FILETYPE_PEM) <= 0) {
        openssl_message(err, errlen, "cannot load the CRL");
        return 0;
    }
    // The leaf's issuer must have a CRL in the file; QEMU's layout has one CA.
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    return 1;
}

int swo_tls_ctx_add_authorized(swo_tls_ctx *ctx, const char *dn) {
    char **grown = realloc(ctx->authorized, (ctx->authorized_count + 1) * sizeof *grown);
    if (!grown) return 0;
    ctx->authorized = grown;
    char *copy = strdup(dn);
    if (!copy) return 0;
    ctx->authorized[ctx->authorized_count++] = copy;
    return 1;
}

void swo_tls_ctx_free(swo_tls_ctx *ctx) {
    if (!ctx) return;
    for (size_t i = 0; i < ctx->authorized_count; i++) free(ctx->authorized[i]);
    free(ctx->authorized);
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

swo_tls *swo_tls_new(swo_tls_ctx *ctx, int fd, const char *hostname, char *err, size_t errlen) {
    ERR_clear_error();
    swo_tls *s = calloc(1, sizeof *s);
    if (!s) { copy_string(err, errlen, "out of memory"); return NULL; }
    s->ctx = ctx;
    s->failure.alert = -1;
    s->ssl = SSL_new(ctx->ssl);
    if (!s->ssl) { openssl_message(err, errlen, "SSL_new"); free(s); return NULL; }
    SSL_set_app_data(s->ssl, s);
    pthread_once(&socket_method_once, make_socket_method);
    BIO *bio = socket_method ? BIO_new(socket_method) : NULL;
    if (!bio) { openssl_message(err, errlen, "BIO_new"); swo_tls_free(s); return NULL; }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(s->ssl, bio, bio);
    if (ctx->server) {
        SSL_set_accept_state(s->ssl);
    } else {
        if (hostname && hostname[0]) {
            unsigned char address[16];
            X509_VERIFY_PARAM *param = SSL_get0_param(s->ssl);
            if (inet_pton(AF_INET, hostname, address) == 1 || inet_pton(AF_INET6, hostname, address) == 1) {
                if (X509_VERIFY_PARAM_set1_ip_asc(param, hostname) != 1) {
                    openssl_message(err, errlen, "bad IP address for the server name"); swo_tls_free(s); return NULL;
                }
            } else {
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (SSL_set1_host(s->ssl, hostname) != 1 || SSL_set_tlsext_host_name(s->ssl, hostname) != 1) {
                    openssl_message(err, errlen, "bad server name"); swo_tls_free(s); return NULL;
                }
            }
        }
        SSL_set_connect_state(s->ssl);
    }
    return s;
}

static int verify_kind(int error, int authz_denied) {
    if (authz_denied) return SWO_TLS_F_NOT_AUTHORIZED;
    switch (error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return SWO_TLS_F_UNKNOWN_CA;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return SWO_TLS_F_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SWO_TLS_F_NOT_YET_VALID;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return SWO_TLS_F_HOSTNAME;
    case X509_V_ERR_CERT_REVOKED:
        return SWO_TLS_F_REVOKED;
    default:
        return SWO_TLS_F_BAD_CERT;
    }
}

/// Classifies a failed SSL call; returns SWO_TLS_FAILED or SWO_TLS_EOF.
static int fail(swo_tls *s, int ret, int saved_errno) {
    int code = SSL_get_error(s->ssl, ret);
    swo_tls_failure_info *f = &s->failure;
    memset(f, 0, sizeof *f);
    f->alert = -1;
    if (code == SSL_ERROR_ZERO_RETURN) { ERR_clear_error(); return SWO_TLS_EOF; }
    if (s->verify_error) {
        f->kind = verify_kind(s->verify_error, s->authz_denied);
        f->verify_error = s->verify_error;
        copy_string(f->detail, sizeof f->detail, s->verify_detail);
        copy_string(f->subject, sizeof f->subject, s->verify_subject);
        ERR_clear_error();
        return SWO_TLS_FAILED;
    }
    unsigned long e = ERR_peek_error();
    if (code == SSL_ERROR_SYSCALL && e == 0) {
        ERR_clear_error();
        if (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE) {
            f->kind = SWO_TLS_F_PEER_CLOSED;
            f->sys_errno = saved_errno;
            copy_string(f->detail, sizeof f->detail, saved_errno ? strerror(saved_errno) : "end of stream");
            return SWO_TLS_FAILED;
        }
        f->kind = SWO_TLS_F_SYSCALL;
        f->sys_errno = saved_errno;
        copy_string(f->detail, sizeof f->detail, strerror(saved_errno));
        return SWO_TLS_FAILED;
    }
    ERR_error_string_n(e, f->detail, sizeof f->detail);
    int reason = ERR_GET_REASON(e);
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        f->alert = reason - SSL_AD_REASON_OFFSET;
        f->kind = f->alert == SSL_AD_PROTOCOL_VERSION ? SWO_TLS_F_VERSION : SWO_TLS_F_PEER_ALERT;
        copy_string(f->detail, sizeof f->detail, SSL_alert_desc_string_long(f->alert));
    } else if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
        switch (reason) {
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_VERSION_TOO_HIGH:
            f->kind = SWO_TLS_F_VERSION;
            break;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
            f->kind = SWO_TLS_F_NOT_TLS;
            break;
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            f->kind = SWO_TLS_F_NO_PEER_CERT;
            break;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            f->kind = SWO_TLS_F_PEER_CLOSED;
            break;
        default:
            f->kind = SWO_TLS_F_OTHER;
        }
    } else {
        f->kind = SWO_TLS_F_OTHER;
    }
    ERR_clear_error();
    return SWO_TLS_FAILED;
}

static int result(swo_tls *s, int ret) {
    int saved_errno = errno;
    int code = SSL_get_error(s->ssl, ret);
    if (code == SSL_ERROR_WANT_READ) return SWO_TLS_WANT_READ;
    if (code == SSL_ERROR_WANT_WRITE) return SWO_TLS_WANT_WRITE;
    return fail(s, ret, saved_errno);
}

int swo_tls_handshake(swo_tls *s) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) return SWO_TLS_OK;
    r = result(s, r);
    // An orderly close during the handshake is the peer hanging up, not an end of data.
    if (r == SWO_TLS_EOF) {
        memset(&s->failure, 0, sizeof s->failure);
        s->failure.alert = -1;
        s->failure.kind = SWO_TLS_F_PEER_CLOSED;
        copy_string(s->failure.detail, sizeof s->failure.detail, "end of stream");
        return SWO_TLS_FAILED;
    }
    return r;
}

int swo_tls_await_confirmation(swo_tls *s) {
    if (s->ticket_seen) return SWO_TLS_OK;
    ERR_clear_error();
    errno = 0;
    unsigned char byte;
    int r = SSL_peek(s->ssl, &byte, 1);
    if (r > 0 || s->ticket_seen) return SWO_TLS_OK;
    return result(s, r);
}

int swo_tls_read(swo_tls *s, void *buffer, size_t count, size_t *done) {
    ERR_clear_error();
    errno = 0;
    *done = 0;
    int r = SSL_read_ex(s->ssl, buffer, count, done);
    if (r == 1) return SWO_TLS_OK;
    return result(s, r);
}

int swo_tls_write(swo_tls *s, const void *buffer, size_t count, size_t *done) {
    ERR_clear_error();
    errno = 0;
    *done = 0;
    int r = SSL_write_ex(s->ssl, buffer, count, done);
    if (r == 1) return SWO_TLS_OK;
    return result(s, r);
}

void swo_tls_close_notify(swo_tls *s) {
    ERR_clear_error();
    if (SSL_is_init_finished(s->ssl)) (void)SSL_shutdown(s->ssl);
    ERR_clear_error();
}

int swo_tls_version(swo_tls *s) { return SSL_version(s->ssl); }

const char *swo_tls_cipher(swo_tls *s) {
    const char *name = SSL_get_cipher_name(s->ssl);
    return name ? name : "";
}

int swo_tls_peer_subject(swo_tls *s, char *buffer, size_t length) {
    X509 *peer = SSL_get0_peer_certificate(s->ssl);
    if (!peer) { if (length) buffer[0] = 0; return 0; }
    name_rfc2253(X509_get_subject_name(peer), buffer, length);
    return 1;
}

void swo_tls_last_failure(swo_tls *s, swo_tls_failure_info *out) { *out = s->failure; }

void swo_tls_free(swo_tls *s) {
    if (!s) return;
    SSL_free(s->ssl);
    free(s);
}
