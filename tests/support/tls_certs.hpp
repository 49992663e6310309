// Test support: self-signed certificates made at run time with OpenSSL's API,
// in a temporary directory removed afterwards, so that no private key is ever
// committed. Also used by the TLS benchmark.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace sluice::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sluice-tls-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::system_error(errno, std::generic_category(), "mkdtemp");
    path_ = pattern;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct cert_files {
  std::filesystem::path cert;
  std::filesystem::path key;
};

// Writes `name`.crt and `name`.key in `dir`: a P-256 key and a self-signed
// certificate for 127.0.0.1 and localhost with the given serial and CN.
inline cert_files make_self_signed(const std::filesystem::path& dir, const std::string& name, long serial,
                                   const std::string& common_name) {
  auto fail = [](const char* what) { throw std::runtime_error(std::string("make_self_signed: ") + what); };
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (!key || !cert) fail("allocation");
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, key.get());
  X509_NAME* subject = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509_set_issuer_name(x, subject);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"},
                            std::pair{NID_basic_constraints, "critical,CA:FALSE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (!ext) fail("extension");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(x, key.get(), EVP_sha256()) == 0) fail("sign");

  cert_files files{dir / (name + ".crt"), dir / (name + ".key")};
  auto write = [&](const std::filesystem::path& p, auto&& pem) {
    std::unique_ptr<BIO, decltype(&BIO_free)> out(BIO_new_file(p.c_str(), "w"), BIO_free);
    if (!out || !pem(out.get())) fail("write");
  };
  write(files.cert, [&](BIO* b) { return PEM_write_bio_X509(b, x) == 1; });
  write(files.key, [&](BIO* b) {
    ::chmod(files.key.c_str(), 0600);
    return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  return files;
}

// The serial number and the subject's CN of a certificate.
inline long serial_of(X509* cert) { return ASN1_INTEGER_get(X509_get_serialNumber(cert)); }

inline std::string common_name_of(X509* cert) {
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  return cn;
}

}  // namespace sluice::test
