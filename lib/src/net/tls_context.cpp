// The server's TLS context: forward-secret AEAD suites, TLS 1.2 or 1.3 at least, and its certificate.
#include "net/tls_context.hpp"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <fstream>
#include <iterator>

namespace wsig::detail {

namespace ssl = boost::asio::ssl;
using error_code = boost::system::error_code;

namespace {

std::string openssl_error() {
    auto e = ERR_get_error();
    if (e == 0) return "unknown error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

result<void> load_pfx(ssl::context& ctx, std::string const& file, std::string const& password) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return make_error(errc::io, fmt::format("cannot read PKCS#12 file '{}'", file));
    std::string der((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto const* p = reinterpret_cast<unsigned char const*>(der.data());
    PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(der.size()));
    if (!p12) return make_error(errc::io, fmt::format("'{}' is not a PKCS#12 file: {}", file, openssl_error()));
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    STACK_OF(X509)* chain = nullptr;
    int ok = PKCS12_parse(p12, password.c_str(), &key, &cert, &chain);
    PKCS12_free(p12);
    if (!ok || !key || !cert) {
        EVP_PKEY_free(key);
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        return make_error(errc::io,
                          fmt::format("cannot open PKCS#12 file '{}' (wrong password?): {}", file, openssl_error()));
    }
    auto* native = ctx.native_handle();
    bool good = SSL_CTX_use_certificate(native, cert) == 1 && SSL_CTX_use_PrivateKey(native, key) == 1 &&
                SSL_CTX_check_private_key(native) == 1;
    for (int i = 0; good && chain && i < sk_X509_num(chain); ++i) {
        X509* c = sk_X509_value(chain, i);
        if (SSL_CTX_add_extra_chain_cert(native, c) == 1)
            sk_X509_set(chain, i, nullptr);  // owned by the context now
        else
            good = false;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    if (!good) return make_error(errc::io, fmt::format("PKCS#12 file '{}': {}", file, openssl_error()));
    return {};
}

// TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only, in this order (Mozilla's "intermediate"
// list less its DHE suites): no RSA key exchange (no forward secrecy), no CBC (Lucky13 and padding
// oracles), no SHA-1 MAC. TLS 1.3 has only AEAD suites with (EC)DHE: OpenSSL's defaults stay.
constexpr char const* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

}  // namespace

result<void> setup_server_tls(ssl::context& ctx, server_tls_settings const& o) {
    auto* native = ctx.native_handle();
    auto const refused = [](std::string const& what) {
        return make_error(errc::io, fmt::format("TLS settings: {}: {}", what, openssl_error()));
    };
    error_code ec;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                    ec);
    if (ec) return make_error(errc::io, fmt::format("TLS settings: the context options: {}", ec.message()));
    // The server's order, not the client's; no renegotiation (a client could ask for one per message).
    auto const wanted = static_cast<std::uint64_t>(SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    if ((static_cast<std::uint64_t>(SSL_CTX_set_options(native, wanted)) & wanted) != wanted)
        return refused("server cipher preference and no renegotiation");
    // An idle connection lets go of OpenSSL's record buffers (about 34 KiB) until its next record.
    SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    int const min_version = o.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(native, min_version) != 1)
        return refused(o.tls13_only ? "TLS 1.3 as the minimum" : "TLS 1.2 as the minimum");
    if (SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1) return refused("the TLS 1.2 cipher suites");
    if (!o.pfx_file.empty()) return load_pfx(ctx, o.pfx_file, o.pfx_password);
    ctx.use_certificate_chain_file(o.cert_file, ec);
    if (ec) return make_error(errc::io, fmt::format("certificate '{}': {}", o.cert_file, ec.message()));
    ctx.use_private_key_file(o.key_file, ssl::context::pem, ec);
    if (ec) return make_error(errc::io, fmt::format("private key '{}': {}", o.key_file, ec.message()));
    if (SSL_CTX_check_private_key(native) != 1)
        return make_error(errc::io, "the private key does not match the certificate");
    return {};
}

}  // namespace wsig::detail
