// Many RTSP viewers for little CPU: a load generator for bench-viewers.
//
// Each viewer is one RTSP/1.0 session over TCP as a player opens it —
// DESCRIBE (answering the server's Digest challenge), SETUP of the SDP's
// first stream with RTP/AVP/TCP interleaved, PLAY, a GET_PARAMETER every
// 20 s to keep the session — and then receives every byte the server
// sends.  Frames are counted as rtspsrc ! fakesink counts them in the
// benchmark (an RTP packet with the marker bit ends one), without rtpbin,
// a jitter buffer or a thread per viewer: one epoll thread reads all of
// them.  What the server does per viewer (its RTSP session, the RTP
// packets written to its socket) is the same as for any player.
#pragma once

#include <glib.h>
#include <gst/rtsp/gstrtspdefs.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::bench {

// rtsp://HOST:PORT/PATH with a numeric IPv4 host.
struct RtspUrl {
  std::string host;
  int port = 554;
  std::string path;

  static bool parse (const std::string &url, RtspUrl &out)
  {
    const std::string scheme = "rtsp://";
    if (url.compare (0, scheme.size (), scheme) != 0)
      return false;
    size_t slash = url.find ('/', scheme.size ());
    std::string authority = url.substr (scheme.size (), slash - scheme.size ());
    size_t colon = authority.rfind (':');
    out.host = authority.substr (0, colon);
    out.port = colon == std::string::npos ? 554 : atoi (authority.c_str () + colon + 1);
    out.path = slash == std::string::npos ? "/" : url.substr (slash);
    return !out.host.empty () && out.port > 0;
  }
};

// One response's status, headers and body, as read during the handshake.
struct RtspResponse {
  int status = 0;
  std::string headers; // lines after the status line, "\r\n"-ended
  std::string body;

  // The value of header `name` (case-insensitive), "" when absent.
  std::string header (const char *name) const
  {
    size_t at = 0;
    const size_t n = strlen (name);
    while (at < headers.size ()) {
      size_t end = headers.find ("\r\n", at);
      if (end == std::string::npos)
        end = headers.size ();
      if (end - at > n && headers[at + n] == ':'
          && g_ascii_strncasecmp (headers.c_str () + at, name, n) == 0) {
        size_t v = at + n + 1;
        while (v < end && headers[v] == ' ')
          v++;
        return headers.substr (v, end - v);
      }
      at = end + 2;
    }
    return "";
  }
};

// The value of `key` in a Digest challenge (key="value"), "" when absent.
inline std::string
digest_param (const std::string &challenge, const char *key)
{
  std::string needle = std::string (key) + "=\"";
  size_t at = challenge.find (needle);
  if (at == std::string::npos)
    return "";
  at += needle.size ();
  size_t end = challenge.find ('"', at);
  return end == std::string::npos ? "" : challenge.substr (at, end - at);
}

class RtspLoadClients {
public:
  RtspLoadClients () : epoll_ (epoll_create1 (EPOLL_CLOEXEC))
  {
    reader_ = std::thread ([this] { read_all (); });
  }
  ~RtspLoadClients ()
  {
    stop_ = true;
    reader_.join ();
    for (auto &v : viewers_)
      close (v->fd);
    close (epoll_);
  }
  RtspLoadClients (const RtspLoadClients &) = delete;
  RtspLoadClients &operator= (const RtspLoadClients &) = delete;

  // Opens and plays one viewer of `url` (Digest credentials `user`/`pw`
  // when the server asks for them); its index for frames(), or -1 with
  // `error` said.  Blocks for the handshake (at most 10 s per answer).
  int add (const std::string &url, const std::string &user, const std::string &pw, std::string &error)
  {
    auto v = std::make_unique<Viewer> ();
    v->user = user;
    v->pw = pw;
    if (!RtspUrl::parse (url, v->url)) {
      error = "not an rtsp://HOST:PORT/PATH URL: " + url;
      return -1;
    }
    v->base = url;
    if (!handshake (*v, error)) {
      if (v->fd >= 0)
        close (v->fd);
      return -1;
    }
    fcntl (v->fd, F_SETFL, fcntl (v->fd, F_GETFL) | O_NONBLOCK);
    std::lock_guard<std::mutex> lock (mutex_);
    int index = (int)viewers_.size ();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = (uint32_t)index;
    v->next_keepalive_us = g_get_monotonic_time () + kKeepaliveUs;
    viewers_.push_back (std::move (v));
    epoll_ctl (epoll_, EPOLL_CTL_ADD, viewers_.back ()->fd, &ev);
    return index;
  }

  int frames (int index) const
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return viewers_[(size_t)index]->frames.load ();
  }
  // Bytes of the stream the server sent that were not RTSP/1.0 interleaved
  // data or responses (0 unless the stream is broken).
  long long garbage_bytes () const { return garbage_.load (); }

private:
  static constexpr gint64 kKeepaliveUs = 20 * G_USEC_PER_SEC;

  struct Viewer {
    RtspUrl url;
    std::string base, user, pw, challenge, session;
    int fd = -1;
    int cseq = 0;
    std::string pending; // bytes read, not yet parsed
    std::atomic<int> frames{0};
    gint64 next_keepalive_us = 0;
  };

  std::string authorization (const Viewer &v, const char *method, const std::string &uri) const
  {
    if (v.challenge.empty ())
      return "";
    std::string realm = digest_param (v.challenge, "realm"), nonce = digest_param (v.challenge, "nonce");
    g_autofree char *response = gst_rtsp_generate_digest_auth_response (
        nullptr, method, realm.c_str (), v.user.c_str (), v.pw.c_str (), uri.c_str (), nonce.c_str ());
    return "Authorization: Digest username=\"" + v.user + "\", realm=\"" + realm + "\", nonce=\"" + nonce
           + "\", uri=\"" + uri + "\", response=\"" + (response ? response : "") + "\"\r\n";
  }

  std::string request (Viewer &v, const char *method, const std::string &uri, const std::string &extra) const
  {
    return std::string (method) + " " + uri + " RTSP/1.0\r\nCSeq: " + std::to_string (++v.cseq)
           + "\r\nUser-Agent: livemicro-bench-viewers\r\n" + authorization (v, method, uri)
           + (v.session.empty () ? "" : "Session: " + v.session + "\r\n") + extra + "\r\n";
  }

  static bool write_all (int fd, const std::string &data)
  {
    size_t done = 0;
    while (done < data.size ()) {
      ssize_t n = send (fd, data.data () + done, data.size () - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      done += (size_t)n;
    }
    return true;
  }

  // Reads one response (blocking, the socket's timeout); what follows it
  // stays in v.pending.  A server may send a shared media's first packets
  // before its answer to PLAY: they are kept, in order, for parse().
  static bool read_response (Viewer &v, RtspResponse &out)
  {
    char buf[4096];
    std::string early;
    for (;;) {
      while (v.pending.size () >= 4 && v.pending[0] == '$') {
        size_t packet = 4 + (((size_t)(guint8)v.pending[2] << 8) | (guint8)v.pending[3]);
        if (v.pending.size () < packet)
          break;
        early.append (v.pending, 0, packet);
        v.pending.erase (0, packet);
      }
      size_t head = v.pending[0] == '$' ? std::string::npos : v.pending.find ("\r\n\r\n");
      if (head != std::string::npos) {
        size_t line = v.pending.find ("\r\n");
        if (sscanf (v.pending.c_str (), "RTSP/1.0 %d", &out.status) != 1)
          return false;
        out.headers = v.pending.substr (line + 2, head + 2 - (line + 2));
        size_t length = strtoul (out.header ("Content-Length").c_str (), nullptr, 10);
        if (v.pending.size () >= head + 4 + length) {
          out.body = v.pending.substr (head + 4, length);
          v.pending = early + v.pending.substr (head + 4 + length);
          return true;
        }
      }
      ssize_t n = recv (v.fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      v.pending.append (buf, (size_t)n);
    }
  }

  // Sends a request; on 401 takes the Digest challenge and sends it again.
  bool exchange (Viewer &v, const char *method, const std::string &uri, const std::string &extra,
                 RtspResponse &r, std::string &error) const
  {
    for (int attempt = 0; attempt < 2; attempt++) {
      r = RtspResponse{};
      if (!write_all (v.fd, request (v, method, uri, extra)) || !read_response (v, r)) {
        error = std::string (method) + " " + uri + ": no answer";
        return false;
      }
      if (r.status != 401 || attempt == 1 || v.user.empty ())
        break;
      v.challenge = r.header ("WWW-Authenticate");
      if (v.challenge.compare (0, 7, "Digest ") != 0) {
        error = std::string (method) + ": the server asks for " + v.challenge + ", not Digest";
        return false;
      }
    }
    if (r.status != 200) {
      error = std::string (method) + " " + uri + ": status " + std::to_string (r.status);
      return false;
    }
    return true;
  }

  bool handshake (Viewer &v, std::string &error) const
  {
    v.fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t)v.url.port);
    timeval timeout{10, 0};
    setsockopt (v.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (inet_pton (AF_INET, v.url.host.c_str (), &addr.sin_addr) != 1
        || connect (v.fd, (sockaddr *)&addr, sizeof addr) != 0) {
      error = "cannot connect to " + v.url.host + ":" + std::to_string (v.url.port);
      return false;
    }
    RtspResponse r;
    if (!exchange (v, "DESCRIBE", v.base, "Accept: application/sdp\r\n", r, error))
      return false;
    // The first stream's control URL, absolute or relative to Content-Base.
    std::string content_base = r.header ("Content-Base");
    if (content_base.empty ())
      content_base = v.base + "/";
    size_t m = r.body.find ("\nm=");
    size_t control = m == std::string::npos ? m : r.body.find ("a=control:", m);
    if (control == std::string::npos) {
      error = "DESCRIBE: no stream with a control URL in the SDP";
      return false;
    }
    std::string track = r.body.substr (control + 10, r.body.find_first_of ("\r\n", control) - (control + 10));
    std::string setup_uri = track.compare (0, 7, "rtsp://") == 0 ? track : content_base + track;
    if (!exchange (v, "SETUP", setup_uri, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n", r, error))
      return false;
    v.session = r.header ("Session").substr (0, r.header ("Session").find (';'));
    return exchange (v, "PLAY", v.base, "Range: npt=0-\r\n", r, error);
  }

  // Parses what a viewer received: "$" channel, 16-bit length, packet; or
  // an RTSP response (to the keep-alive).  Leaves an incomplete tail.
  void parse (Viewer &v)
  {
    size_t at = 0;
    const std::string &p = v.pending;
    while (at < p.size ()) {
      if (p[at] == '$') {
        if (p.size () - at < 4)
          break;
        size_t length = ((size_t)(guint8)p[at + 2] << 8) | (guint8)p[at + 3];
        if (p.size () - at < 4 + length)
          break;
        if (p[at + 1] == 0 && length >= 2 && ((guint8)p[at + 5] & 0x80))
          v.frames++;
        at += 4 + length;
      } else if (p.compare (at, 5, "RTSP/") == 0) {
        size_t head = p.find ("\r\n\r\n", at);
        if (head == std::string::npos)
          break;
        RtspResponse r;
        r.headers = p.substr (at, head + 2 - at);
        size_t end = head + 4 + strtoul (r.header ("Content-Length").c_str (), nullptr, 10);
        if (end > p.size ())
          break; // its body is still on the way
        at = end;
      } else if (p.size () - at < 5 && std::string ("RTSP/").compare (0, p.size () - at, p, at) == 0) {
        break; // the start of a response
      } else {
        garbage_++;
        at++;
      }
    }
    v.pending.erase (0, std::min (at, p.size ()));
  }

  void read_all ()
  {
    epoll_event events[64];
    std::vector<char> buf (1 << 16);
    while (!stop_) {
      int n = epoll_wait (epoll_, events, 64, 100);
      for (int i = 0; i < n; i++) {
        Viewer *v;
        {
          std::lock_guard<std::mutex> lock (mutex_);
          v = viewers_[events[i].data.u32].get ();
        }
        ssize_t got;
        while ((got = recv (v->fd, buf.data (), buf.size (), 0)) > 0) {
          v->pending.append (buf.data (), (size_t)got);
          parse (*v);
        }
      }
      keep_alive ();
    }
  }

  void keep_alive ()
  {
    gint64 now = g_get_monotonic_time ();
    std::lock_guard<std::mutex> lock (mutex_);
    for (auto &v : viewers_)
      if (now >= v->next_keepalive_us) {
        v->next_keepalive_us = now + kKeepaliveUs;
        write_all (v->fd, request (*v, "GET_PARAMETER", v->base, ""));
      }
  }

  int epoll_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Viewer>> viewers_;
  std::atomic<long long> garbage_{0};
};

} // namespace livemicro::bench
