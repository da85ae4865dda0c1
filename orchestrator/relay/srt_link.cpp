#include "srt_link.h"

#include <cctype>

namespace livemicro::orchestrator::relay {

std::optional<std::string>
invalid_reason (const SrtLinkSettings &s)
{
  if (s.passphrase.size () < kMinPassphraseChars || s.passphrase.size () > kMaxPassphraseChars)
    return "the relay passphrase must have " + std::to_string (kMinPassphraseChars) + " to "
           + std::to_string (kMaxPassphraseChars) + " characters (it has "
           + std::to_string (s.passphrase.size ()) + ")";
  if (s.key_bytes != 16 && s.key_bytes != 24 && s.key_bytes != 32)
    return "the relay AES key size must be 16, 24 or 32 bytes, not " + std::to_string (s.key_bytes);
  if (s.latency_ms < 0 || s.latency_ms > kMaxLatencyMs)
    return "the relay latency must be 0 to " + std::to_string (kMaxLatencyMs) + " ms, not "
           + std::to_string (s.latency_ms);
  return std::nullopt;
}

namespace {

// A host name, an IPv4 address or an IPv6 address: nothing that could
// carry a query string into the URI.
bool
plain_host (const std::string &host)
{
  if (host.empty () || host.size () > 253)
    return false;
  for (char c : host)
    if (!std::isalnum ((unsigned char)c) && c != '.' && c != '-' && c != ':')
      return false;
  return true;
}

} // namespace

std::optional<std::string>
configure_srt_element (GstElement *srt, const std::string &host, uint16_t port, bool listener,
                       const SrtLinkSettings &s)
{
  if (auto why = invalid_reason (s))
    return why;
  if (!plain_host (host))
    return "the relay address \"" + host + "\" is not a host name or an IP address";
  if (port == 0)
    return std::string ("the relay needs a port (1 to 65535)");
  const bool v6 = host.find (':') != std::string::npos;
  const std::string uri = "srt://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string (port)
                          + (listener ? "?mode=listener" : "");
  // The URI first: setting it resets mode, addresses and ports from its query.
  g_object_set (srt, "uri", uri.c_str (), nullptr);
  gst_util_set_object_arg (G_OBJECT (srt), "mode", listener ? "listener" : "caller");
  g_object_set (srt, "passphrase", s.passphrase.c_str (), "latency", s.latency_ms, nullptr);
  gst_util_set_object_arg (G_OBJECT (srt), "pbkeylen", std::to_string (s.key_bytes).c_str ());
  return std::nullopt;
}

} // namespace livemicro::orchestrator::relay
