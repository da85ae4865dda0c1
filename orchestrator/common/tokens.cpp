#include "tokens.h"

#include <glib.h>
#include <sys/random.h>

#include <stdexcept>
#include <vector>

namespace livemicro::orchestrator {

namespace {

std::vector<unsigned char>
random_bytes (size_t n)
{
  std::vector<unsigned char> buf (n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom (buf.data () + got, n - got, 0);
    if (r < 0)
      throw std::runtime_error ("getrandom failed");
    got += (size_t)r;
  }
  return buf;
}

std::string
checksum (GChecksumType type, const std::string &data)
{
  g_autoptr (GChecksum) c = g_checksum_new (type);
  g_checksum_update (c, reinterpret_cast<const guchar *> (data.data ()), (gssize)data.size ());
  return g_checksum_get_string (c);
}

} // namespace

std::string
random_token (size_t n_bytes)
{
  auto bytes = random_bytes (n_bytes);
  g_autofree char *b64 = g_base64_encode (bytes.data (), bytes.size ());
  std::string s = b64;
  for (char &c : s)
    c = c == '+' ? '-' : (c == '/' ? '_' : c);
  while (!s.empty () && s.back () == '=')
    s.pop_back ();
  return s;
}

std::string
random_id ()
{
  auto bytes = random_bytes (16);
  static const char *hex = "0123456789abcdef";
  std::string s;
  for (unsigned char b : bytes) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

std::string
sha256_hex (const std::string &data)
{
  return checksum (G_CHECKSUM_SHA256, data);
}

std::string
digest_ha1 (const std::string &user, const std::string &realm, const std::string &password)
{
  return checksum (G_CHECKSUM_MD5, user + ":" + realm + ":" + password);
}

bool
constant_time_equal (const std::string &a, const std::string &b)
{
  if (a.size () != b.size ())
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size (); i++)
    diff |= (unsigned char)(a[i] ^ b[i]);
  return diff == 0;
}

} // namespace livemicro::orchestrator
