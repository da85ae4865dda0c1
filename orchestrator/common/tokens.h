// Session credentials: random tokens, and the hashes the store keeps.
#pragma once

#include <string>

namespace livemicro::orchestrator {

// n random bytes from the kernel's CSPRNG, base64url without padding.
std::string random_token (size_t n_bytes = 32);
// A session id: 16 random bytes, lower-case hex (safe in URLs and RTSP).
std::string random_id ();
std::string sha256_hex (const std::string &data);
// Digest HA1 = MD5(user:realm:password), as RTSP Digest auth uses it.
std::string digest_ha1 (const std::string &user, const std::string &realm, const std::string &password);
// Comparison that takes the same time whatever the contents.
bool constant_time_equal (const std::string &a, const std::string &b);

} // namespace livemicro::orchestrator
